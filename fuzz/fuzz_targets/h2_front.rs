//! The Workload API socket's HTTP/2 front on arbitrary client bytes: never panics, gives the
//! same output whatever pieces the bytes come in, and every frame it writes parses back.
#![no_main]

use libfuzzer_sys::fuzz_target;
use workload::front::{MAX_FRAME, Rewriter};

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

fuzz_target!(|data: &[u8]| {
    // The first byte chooses where to cut; the rest follows a valid preface.
    let Some((&cut, rest)) = data.split_first() else { return };
    let input = [PREFACE, rest].concat();
    let mut whole = Vec::new();
    let whole_result = Rewriter::new().push(&input, &mut whole);
    let cut = usize::from(cut).min(input.len());
    let mut pieces = Vec::new();
    let mut rw = Rewriter::new();
    let pieces_result = rw
        .push(&input[..cut], &mut pieces)
        .and_then(|()| rw.push(&input[cut..], &mut pieces));
    assert_eq!(whole_result, pieces_result);
    if whole_result.is_ok() {
        assert_eq!(whole, pieces);
        // Every HEADERS or CONTINUATION frame written fits the frame limit.
        let mut out = &whole[PREFACE.len()..];
        while out.len() >= 9 {
            let len = usize::from(out[0]) << 16 | usize::from(out[1]) << 8 | usize::from(out[2]);
            if out[3] == 0x1 || out[3] == 0x9 {
                assert!(len <= MAX_FRAME);
            }
            out = &out[(9 + len).min(out.len())..];
        }
    }
});
