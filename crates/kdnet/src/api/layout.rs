//! [`kd_layout!`]: each DbgKd message is a fixed header of little-endian
//! fields followed by data, and the unions inside it are fixed blocks of
//! such fields; each layout is written down once, as the struct's field
//! list, from which both the decoder and the encoder are made.
//!
//! A small macro rather than a codec crate (binrw, deku, zerocopy): the
//! layouts are a handful of plain little-endian integers and byte arrays,
//! and reading them through the crate's checked [`Le`](crate::bytes::Le)
//! view, as every other packet field is read, needs neither a derive
//! crate nor a view of the bytes as a struct.

/// Declare a DbgKd layout, its fields in wire order (each a
/// [`Field`](crate::bytes::Field)), and check at compile time that they add
/// up to its size `$len`. Two forms:
///
/// - a message, `pub struct Name = ("WHAT", LEN) { header { fields }
///   pub data: Vec<u8>, }`: the header, then `data`, what follows it.
///   Makes `parse` (a packet shorter than the header is
///   [`MessageError::Short`](super::MessageError::Short) naming `WHAT`) and
///   `to_bytes` (`parse(b).to_bytes() == b`);
/// - a block of exactly `LEN` bytes, `pub struct Name: [u8; LEN] { fields }`:
///   makes `from_bytes` and `to_bytes`.
macro_rules! kd_layout {
    (
        $(#[$meta:meta])*
        pub struct $name:ident = ($what:literal, $len:expr) {
            header {
                $( $(#[$fmeta:meta])* pub $field:ident: $ty:ty, )*
            }
            $(#[$dmeta:meta])*
            pub data: Vec<u8>,
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub struct $name {
            $( $(#[$fmeta])* pub $field: $ty, )*
            $(#[$dmeta])*
            pub data: Vec<u8>,
        }

        const _: () = assert!(0 $( + <$ty as $crate::bytes::Field>::SIZE )* == $len);

        impl $name {
            /// Decode a packet's data: the header, then the rest as `data`.
            pub fn parse(d: &[u8]) -> Result<Self, super::MessageError> {
                let mut r = $crate::bytes::Fields::new(d);
                let parsed = (|| {
                    Some(Self {
                        $( $field: r.next()?, )*
                        data: r.rest()?.to_vec(),
                    })
                })();
                parsed.ok_or(super::error::short($what, $len, d.len()))
            }

            /// The packet's data: the header, then `data`.
            pub fn to_bytes(&self) -> Vec<u8> {
                let mut v = Vec::with_capacity($len + self.data.len());
                $( $crate::bytes::Field::write(&self.$field, &mut v); )*
                v.extend_from_slice(&self.data);
                v
            }
        }
    };
    (
        $(#[$meta:meta])*
        pub struct $name:ident: [u8; $len:expr] {
            $( $(#[$fmeta:meta])* pub $field:ident: $ty:ty, )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
        pub struct $name {
            $( $(#[$fmeta])* pub $field: $ty, )*
        }

        const _: () = assert!(0 $( + <$ty as $crate::bytes::Field>::SIZE )* == $len);

        impl $name {
            /// Decode the block.
            pub fn from_bytes(b: &[u8; $len]) -> Self {
                let mut r = $crate::bytes::Fields::new(b);
                // Never `None`: the fields fit (checked above).
                let parsed = (|| Some(Self { $( $field: r.next()?, )* }))();
                parsed.unwrap_or_default()
            }

            /// The block's bytes.
            pub fn to_bytes(&self) -> [u8; $len] {
                let mut v = Vec::with_capacity($len);
                $( $crate::bytes::Field::write(&self.$field, &mut v); )*
                let mut out = [0u8; $len];
                $crate::bytes::put(&mut out, 0, &v);
                out
            }
        }
    };
}
