//! Any bytes handed to the job spec parser: it may refuse them, never panic, and whatever it
//! accepts has a positive window no longer than its deadline.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(job) = lethe::spec::parse_job(text, std::path::Path::new("fuzz.toml")) {
        let w = &job.windows.default;
        assert!(w.grace.seconds() > 0 && w.grace <= w.deadline);
    }
});
