//! A `log` logger on the serial console: `[LEVEL] message` lines.

use log::{LevelFilter, Log, Metadata, Record};

struct SerialLogger;

static LOGGER: SerialLogger = SerialLogger;

impl Log for SerialLogger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &Record<'_>) {
        if self.enabled(record.metadata()) {
            crate::serial::with(|c| {
                let _ = core::fmt::Write::write_fmt(
                    c,
                    format_args!("[{:<5}] {}\n", record.level(), record.args()),
                );
            });
        }
    }

    fn flush(&self) {}
}

/// Installs the serial logger (initialising COM1 if needed) with `level`
/// as the maximum level. Calling it again only changes the level.
pub fn init(level: LevelFilter) {
    crate::serial::init();
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(level);
}

/// Parses `error`, `warn`, `info`, `debug`, `trace` or `off`.
pub fn parse_level(s: &str) -> Option<LevelFilter> {
    s.parse().ok()
}
