//! Entry points for the fuzz targets (`fuzz/`): not part of the API.

use crate::serde::Serde;
use crate::store::{KvStore, RecordBuffer, StateStore, WindowStore};
use crate::window::Windowed;

/// Splits `data` into changelog records (`[key len u8][key][tag u8][value]…`) and restores
/// them into every kind of store: corrupt records are errors, never panics, and restoring
/// never counts as a change to write back. Also decodes `data` with the serdes stores use.
pub fn restore(data: &[u8]) {
    let _ = Windowed::<String>::deserialize(data);
    let _ = <(String, i64)>::deserialize(data);
    let _ = crate::serde::Json::<Vec<i64>>::deserialize(data);

    let records = split(data);
    round_trip(KvStore::<String, i64>::default, &records);
    round_trip(WindowStore::<String, i64>::default, &records);
    round_trip(RecordBuffer::<i64, String>::default, &records);
}

fn split(mut data: &[u8]) -> Vec<(&[u8], Option<&[u8]>)> {
    let mut out = Vec::new();
    while let [klen, rest @ ..] = data {
        let klen = (*klen as usize).min(rest.len());
        let (key, rest) = rest.split_at(klen);
        let Some((tag, rest)) = rest.split_first() else {
            break;
        };
        let vlen = (*tag as usize >> 1).min(rest.len());
        let (value, rest) = rest.split_at(vlen);
        out.push((key, (tag & 1 == 1).then_some(value)));
        data = rest;
    }
    out
}

fn round_trip<S: StateStore>(make: impl Fn() -> S, records: &[(&[u8], Option<&[u8]>)]) {
    let mut store = make();
    for (k, v) in records {
        let _ = store.restore(k, *v);
    }
    // A restored store has nothing to write back: restoring is not a change.
    let mut changes = Vec::new();
    store.drain_changes(&mut changes);
    assert!(changes.is_empty(), "a restore produced changelog writes");
}
