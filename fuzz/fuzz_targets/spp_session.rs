#![no_main]
//! libFuzzer target; the body is `p2pd::fuzzing::spp_session` (see its docs).
libfuzzer_sys::fuzz_target!(|data: &[u8]| p2pd::fuzzing::spp_session(data));
