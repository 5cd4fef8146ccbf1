//! `dump=cpuid`: every CPUID leaf in the raw format of the `cpuid -r` tool,
//! each line prefixed with `@@cpuid ` for the host runner.
//!
//! Raw CPUID (not the pvops entry, which a backend may filter).

use pvops_probe::{CpuidResult, CpuidSource, NativeCpuid};

/// Highest leaf count dumped per range (guards against garbage maxima).
const MAX_LEAVES: u32 = 0x100;

fn line(leaf: u32, sub: u32, r: CpuidResult) {
    bootkit::println!(
        "@@cpuid    {leaf:#010x} {sub:#04x}: eax={:#010x} ebx={:#010x} ecx={:#010x} edx={:#010x}",
        r.eax,
        r.ebx,
        r.ecx,
        r.edx
    );
}

fn leaf_with_subleaves(leaf: u32) {
    let c = NativeCpuid;
    let r0 = c.cpuid(leaf, 0);
    match leaf {
        // Deterministic cache parameters: until the null cache type,
        // which is printed too.
        4 | 0x8000_001d => {
            for sub in 0..16 {
                let r = c.cpuid(leaf, sub);
                line(leaf, sub, r);
                if r.eax & 0x1f == 0 {
                    break;
                }
            }
        }
        // Structured features: EAX of subleaf 0 is the highest subleaf.
        7 => {
            for sub in 0..=r0.eax.min(7) {
                line(leaf, sub, c.cpuid(leaf, sub));
            }
        }
        // Topology: until level type 0 (printed too).
        0xb | 0x1f => {
            for sub in 0..8 {
                let r = c.cpuid(leaf, sub);
                line(leaf, sub, r);
                if (r.ecx >> 8) & 0xff == 0 {
                    break;
                }
            }
        }
        // XSAVE: subleaves 0 and 1, then one per supported component.
        0xd => {
            let r1 = c.cpuid(leaf, 1);
            let mask = u64::from(r0.eax)
                | (u64::from(r0.edx) << 32)
                | u64::from(r1.ecx)
                | (u64::from(r1.edx) << 32);
            line(leaf, 0, r0);
            line(leaf, 1, r1);
            for sub in 2..63 {
                if mask & (1 << sub) != 0 {
                    line(leaf, sub, c.cpuid(leaf, sub));
                }
            }
        }
        _ => line(leaf, 0, r0),
    }
}

/// Prints the dump.
pub fn dump() {
    let c = NativeCpuid;
    bootkit::println!("@@cpuid CPU 0:");
    let max_basic = c.cpuid(0, 0).eax.min(MAX_LEAVES - 1);
    for leaf in 0..=max_basic {
        leaf_with_subleaves(leaf);
    }
    // Intel answers unknown leaves with the highest basic leaf; such
    // mirrors are not hypervisor interfaces.
    let mirror = c.cpuid(max_basic, 0);
    let mut base = 0x4000_0000u32;
    while base <= 0x4000_ff00 {
        let r = c.cpuid(base, 0);
        let zero = r == CpuidResult::default();
        if !zero && r != mirror {
            let last = if r.eax > base && r.eax - base < MAX_LEAVES {
                r.eax
            } else {
                base
            };
            for leaf in base..=last {
                line(leaf, 0, c.cpuid(leaf, 0));
            }
        }
        base += 0x100;
    }
    let max_ext = c.cpuid(0x8000_0000, 0).eax;
    if (0x8000_0000..0x8000_0000 + MAX_LEAVES).contains(&max_ext) {
        for leaf in 0x8000_0000..=max_ext {
            leaf_with_subleaves(leaf);
        }
    } else {
        line(0x8000_0000, 0, c.cpuid(0x8000_0000, 0));
    }
}
