//! How keys and values become bytes on topics and in changelogs.
//!
//! Every type that crosses a topic or lives in a state store implements [`Serde`]. Strom ships
//! encodings compatible with Kafka's standard serdes: `String` (UTF-8), `Vec<u8>` / `Bytes`
//! (raw), integers and floats (big-endian, as Kafka's `IntegerSerializer`, `LongSerializer`,
//! `DoubleSerializer`), `()` (always null: for topics whose keys are absent), `Option<T>` (null
//! is `None`) and [`Json<T>`] for anything `serde` can (de)serialize. Implement [`Serde`] for your
//! own types, or use [`json_serde!`](crate::json_serde) to give them a JSON encoding in one line.

use bytes::Bytes;

use crate::error::SerdeError;

/// A type's encoding on topics and in state-store changelogs.
pub trait Serde: Sized {
    /// Appends the encoding of `self` to `out`.
    fn serialize(&self, out: &mut Vec<u8>);
    /// Reads a value back from its encoding.
    fn deserialize(bytes: &[u8]) -> Result<Self, SerdeError>;
    /// Whether this value is written as null (no bytes at all on the topic).
    fn is_null(&self) -> bool {
        false
    }
    /// The value a null key or value reads as; most types have none.
    fn from_null() -> Result<Self, SerdeError> {
        Err(SerdeError::new(std::any::type_name::<Self>(), "null"))
    }
    /// The encoding as a fresh buffer, or `None` for null.
    fn to_bytes(&self) -> Option<Bytes> {
        if self.is_null() {
            return None;
        }
        let mut out = Vec::new();
        self.serialize(&mut out);
        Some(Bytes::from(out))
    }
    /// Reads a possibly-null key or value.
    fn from_bytes(bytes: Option<&[u8]>) -> Result<Self, SerdeError> {
        match bytes {
            Some(b) => Self::deserialize(b),
            None => Self::from_null(),
        }
    }
}

impl Serde for String {
    fn serialize(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.as_bytes());
    }
    fn deserialize(bytes: &[u8]) -> Result<Self, SerdeError> {
        std::str::from_utf8(bytes)
            .map(str::to_owned)
            .map_err(|e| SerdeError::new("String", e.to_string()))
    }
}

impl Serde for Vec<u8> {
    fn serialize(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self);
    }
    fn deserialize(bytes: &[u8]) -> Result<Self, SerdeError> {
        Ok(bytes.to_vec())
    }
}

impl Serde for Bytes {
    fn serialize(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self);
    }
    fn deserialize(bytes: &[u8]) -> Result<Self, SerdeError> {
        Ok(Bytes::copy_from_slice(bytes))
    }
}

impl Serde for () {
    fn serialize(&self, _out: &mut Vec<u8>) {}
    fn deserialize(_bytes: &[u8]) -> Result<Self, SerdeError> {
        Ok(())
    }
    fn is_null(&self) -> bool {
        true
    }
    fn from_null() -> Result<Self, SerdeError> {
        Ok(())
    }
}

impl<T: Serde> Serde for Option<T> {
    fn serialize(&self, out: &mut Vec<u8>) {
        if let Some(v) = self {
            v.serialize(out)
        }
    }
    fn deserialize(bytes: &[u8]) -> Result<Self, SerdeError> {
        T::deserialize(bytes).map(Some)
    }
    fn is_null(&self) -> bool {
        self.as_ref().is_none_or(T::is_null)
    }
    fn from_null() -> Result<Self, SerdeError> {
        Ok(None)
    }
}

macro_rules! numeric_serde {
    ($($t:ty),*) => {$(
        impl Serde for $t {
            fn serialize(&self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_be_bytes());
            }
            fn deserialize(bytes: &[u8]) -> Result<Self, SerdeError> {
                let arr: [u8; std::mem::size_of::<$t>()] = bytes.try_into().map_err(|_| {
                    SerdeError::new(
                        stringify!($t),
                        format!("expected {} bytes, got {}", std::mem::size_of::<$t>(), bytes.len()),
                    )
                })?;
                Ok(<$t>::from_be_bytes(arr))
            }
        }
    )*};
}
numeric_serde!(i8, i16, i32, i64, u8, u16, u32, u64, f32, f64);

impl Serde for bool {
    fn serialize(&self, out: &mut Vec<u8>) {
        out.push(u8::from(*self));
    }
    fn deserialize(bytes: &[u8]) -> Result<Self, SerdeError> {
        match bytes {
            [0] => Ok(false),
            [1] => Ok(true),
            _ => Err(SerdeError::new("bool", "expected one byte, 0 or 1")),
        }
    }
}

/// A value encoded as JSON with `serde_json`; derefs to the value.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Json<T>(pub T);

impl<T> std::ops::Deref for Json<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T: serde::Serialize + serde::de::DeserializeOwned> Serde for Json<T> {
    fn serialize(&self, out: &mut Vec<u8>) {
        json_serialize(&self.0, out)
    }
    fn deserialize(bytes: &[u8]) -> Result<Self, SerdeError> {
        json_deserialize(bytes).map(Json)
    }
}

#[doc(hidden)]
pub fn json_serialize<T: serde::Serialize>(value: &T, out: &mut Vec<u8>) {
    // Serializing a derived `Serialize` type into a Vec cannot fail (maps with non-string keys
    // aside, which serde_json reports and which we write as null to keep the record).
    let at = out.len();
    if serde_json::to_writer(&mut *out, value).is_err() {
        out.truncate(at);
        out.extend_from_slice(b"null");
    }
}

#[doc(hidden)]
pub fn json_deserialize<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, SerdeError> {
    serde_json::from_slice(bytes)
        .map_err(|e| SerdeError::new(std::any::type_name::<T>(), e.to_string()))
}

/// Implements [`Serde`] as JSON for types that derive `serde::Serialize` and `Deserialize`.
///
/// ```
/// #[derive(Clone, serde::Serialize, serde::Deserialize)]
/// struct Order { id: u64, amount: f64 }
/// strom_streams::json_serde!(Order);
/// ```
#[macro_export]
macro_rules! json_serde {
    ($($t:ty),+ $(,)?) => {$(
        impl $crate::Serde for $t {
            fn serialize(&self, out: &mut Vec<u8>) {
                $crate::serde::json_serialize(self, out)
            }
            fn deserialize(bytes: &[u8]) -> Result<Self, $crate::SerdeError> {
                $crate::serde::json_deserialize(bytes)
            }
        }
    )+};
}

/// A pair, for joined or grouped values: the first element length-prefixed (u32, big-endian).
impl<A: Serde, B: Serde> Serde for (A, B) {
    fn serialize(&self, out: &mut Vec<u8>) {
        let at = out.len();
        out.extend_from_slice(&[0; 4]);
        self.0.serialize(out);
        let len = (out.len() - at - 4) as u32;
        out[at..at + 4].copy_from_slice(&len.to_be_bytes());
        self.1.serialize(out);
    }
    fn deserialize(bytes: &[u8]) -> Result<Self, SerdeError> {
        let bad = || SerdeError::new("pair", "truncated");
        let len = u32::from_be_bytes(
            bytes
                .get(..4)
                .ok_or_else(bad)?
                .try_into()
                .map_err(|_| bad())?,
        );
        let rest = &bytes[4..];
        let first = rest.get(..len as usize).ok_or_else(bad)?;
        Ok((
            A::deserialize(first)?,
            B::deserialize(&rest[len as usize..])?,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round<T: Serde + PartialEq + std::fmt::Debug>(v: T) {
        let b = v.to_bytes();
        assert_eq!(T::from_bytes(b.as_deref()).unwrap(), v);
    }

    #[test]
    fn round_trips() {
        round("héllo".to_string());
        round(-5i64);
        round(7u32);
        round(1.5f64);
        round(());
        round(Some(3i32));
        round(None::<i32>);
        round((String::from("a"), 9i64));
        round(Json(vec![1, 2, 3]));
        round(true);
    }

    #[test]
    fn kafka_compatible_integers() {
        assert_eq!(
            42i64.to_bytes().unwrap().as_ref(),
            &[0, 0, 0, 0, 0, 0, 0, 42]
        );
        assert!(i64::deserialize(&[1, 2]).is_err());
        assert!(String::deserialize(&[0xff]).is_err());
        assert!(i64::from_bytes(None).is_err());
    }
}
