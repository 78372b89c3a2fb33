//! Control-connection bytes from an untrusted peer: cut into frames by
//! `StreamDecoder`, each frame decoded by `Message::decode`. Nothing may
//! panic, every frame must match its plen, and every message that decodes
//! must survive encode → decode unchanged.
//!
//! The first input byte picks the chunk size the stream is fed in, so that
//! partial headers and buffer compaction are exercised too.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rpcap::header::MAX_CONTROL_PLEN;
use rpcap::stream::StreamDecoder;
use rpcap::{Header, Message, HEADER_LEN};

fuzz_target!(|data: &[u8]| {
    let Some((&chunk, data)) = data.split_first() else {
        return;
    };
    let mut stream = StreamDecoder::new(MAX_CONTROL_PLEN);
    for piece in data.chunks(usize::from(chunk).max(1)) {
        stream.feed(piece);
        loop {
            match stream.next() {
                Ok(Some((header, payload))) => check_frame(&header, payload),
                Ok(None) => break,
                // Fatal for the connection: nothing more is read.
                Err(e) => {
                    assert!(e.plen > MAX_CONTROL_PLEN);
                    return;
                }
            }
        }
    }
    assert!(stream.buffered() <= data.len());
});

fn check_frame(header: &Header, payload: &[u8]) {
    assert_eq!(payload.len(), header.plen as usize);
    match Message::decode(header, payload) {
        Ok(msg) => {
            let bytes = msg.to_bytes();
            let again = Header::parse(&bytes).expect("encoded message has a header");
            assert_eq!(again.plen as usize, bytes.len() - HEADER_LEN);
            assert_eq!(again.msg_type, msg.msg_type() as u8);
            assert_eq!(Message::decode(&again, &bytes[HEADER_LEN..]), Ok(msg));
        }
        Err(e) => {
            // The answer a server would send must exist for every error.
            let _ = (e.code(), e.to_string());
        }
    }
}
