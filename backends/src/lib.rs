//! Backends.
#![no_std]
