//! KDNET datagrams as they arrive from the network (crates/kdnet):
//! framing, AES-256-CBC and the HMAC check on the raw bytes; and, since
//! random bytes never pass the HMAC, the same input sealed with the key
//! first, so everything after the check (the KDNET header's pad and
//! sequence, the payload as a control message or a KD packet and its
//! DbgKd message) sees hostile plaintext too.
//!
//! The key is windbg-uncut's (`8.8.8.8`, with the data key its handshake
//! agreed, kdnet.md §3.5), so the capture's datagrams are seeds that open.
//!
//! The harness is `pooldump_fuzz::targets::kdnet_datagram` (fuzz/src/targets/), shared
//! with the regression tests that replay the crashers on stable.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| pooldump_fuzz::targets::kdnet_datagram::run(data));
