//! Fuzzes the job message parser: any bytes either parse to a job that satisfies the
//! contract (and survives a round trip through its body) or are rejected, never a panic.
//!
//! The parser module is included on its own, so the fuzzer builds in seconds without
//! the AWS SDK. Run (from the repository root):
//!
//!   RUSTC_BOOTSTRAP=1 cargo fuzz run parse_job -- -max_total_time=60

#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../src/job.rs"]
#[allow(dead_code)]
mod job;

fuzz_target!(|data: &[u8]| {
    // SQS bodies are text: the worker never sees anything but valid UTF-8.
    let Ok(body) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(parsed) = job::parse(body) {
        let again = job::parse(&parsed.to_body()).expect("a parsed job's body parses again");
        assert_eq!(again, parsed);
        assert!(!parsed.request_id.is_empty() && parsed.request_id.len() <= 128);
        assert!(parsed.user_name().is_some() || parsed.access_key_id().is_some());
        assert!(
            job::salvage_request_id(body).is_some(),
            "a valid job's request id is always salvageable"
        );
    } else {
        // Invalid bodies are dead-lettered with whatever request id can be salvaged.
        let _ = job::salvage_request_id(body);
    }
});
