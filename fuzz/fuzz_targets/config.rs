//! The config parser and validator (`Config::parse`, what `payroute check`
//! and every reload run) on arbitrary UTF-8 text: it must never panic, and
//! answer a config or its located issues.
//!
//! Every input is also parsed on the path a config of a megabyte and more
//! takes (the head alone, then `[[merchant]]` tables in chunks), here from
//! 0 bytes; it must answer exactly as the whole-file parse does.
//!
//! The fixture's config "lives" in a directory that does not exist, so a
//! relative certificate or `file:` path fails to open. Absolute paths are
//! read as `check` would read them.
#![no_main]

use libfuzzer_sys::fuzz_target;
use payroute::fuzz_api::{check_config, check_config_chunked};

/// Issues are capped at 1 KiB of message (`validate::Issues::at`), plus
/// the `FILE:LINE:COL: ` prefix and the note on the cut.
const MAX_LINE: usize = 1024 + 200;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let whole = check_config(text);
    if let Err(lines) = &whole {
        assert!(!lines.is_empty(), "a refused config names at least one issue");
        for line in lines {
            assert!(line.len() <= MAX_LINE, "an issue of {} bytes", line.len());
        }
    }
    let chunked = check_config_chunked(text);
    assert_eq!(whole, chunked, "the chunked path answers otherwise");
});
