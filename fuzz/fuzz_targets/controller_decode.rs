//! The controller listener's frames: any bytes either decode to a request or response or are
//! refused, never a panic; a decoded metadata command applies to an image without panicking.
#![no_main]

use libfuzzer_sys::fuzz_target;
use strom_controller::image::{Command, Image};
use strom_controller::rpc::{decode, Request, Response};

fuzz_target!(|data: &[u8]| {
    let _ = decode::<Response>(data);
    if let Ok(Request::Propose(cmd)) = decode::<Request>(data) {
        let mut image = Image::default();
        for (i, c) in [
            Command::Register {
                id: 1,
                host: "h".into(),
                port: 1,
                rack: None,
            },
            Command::Unfence { id: 1, epoch: 1 },
        ]
        .iter()
        .enumerate()
        {
            image.apply(i as u64 + 1, c);
        }
        image.apply(3, &cmd);
        image.apply(4, &cmd);
    }
    if let Ok(cmd) = decode::<Command>(data) {
        Image::default().apply(1, &cmd);
    }
});
