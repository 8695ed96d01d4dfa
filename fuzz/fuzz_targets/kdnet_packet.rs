//! A decrypted KDNET payload: the KD packet layer (leader, type, id,
//! ByteCount, checksum) and the DbgKd messages in it, state changes,
//! manipulate-state replies, debug I/O and file I/O, decoded as the
//! session decodes them (crates/kdnet/src/packet.rs, api.rs, session.rs).
//!
//! The harness is `pooldump_fuzz::targets::kdnet_packet` (fuzz/src/targets/), shared
//! with the regression tests that replay the crashers on stable.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| pooldump_fuzz::targets::kdnet_packet::run(data));
