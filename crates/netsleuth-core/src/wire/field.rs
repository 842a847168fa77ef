//! Where a header's fields lie, and the one set of readers for them.
//!
//! Each header module names its fields as byte ranges (`mod field { pub const SRC_PORT: Field = 0..2; }`,
//! smoltcp's style) instead of indexing with bare numbers. Two kinds of reads:
//!
//! - a header view (`TcpHeader`, `Ipv4Header`, …) checks once, in its constructor, that its fixed part
//!   is there; its accessors then read with [`get`], which cannot fail because every field lies inside
//!   the fixed part (each header's tests read every accessor of a minimal header);
//! - anything else (netlink attributes, capture block headers, DNS records) reads with the checked
//!   readers ([`be16`], [`ne32`], [`u32_in`], …): a field beyond the bytes given is a [`Short`] error,
//!   never a panic.
//!
//! Nothing here allocates; every reader is `#[inline(always)]` so a view over a slice whose length the
//! compiler knows costs what indexing by hand cost.

use std::fmt;
use std::ops::{Range, RangeFrom};

/// Where a fixed-size field lies in its header.
pub type Field = Range<usize>;
/// Where a header's variable-length part (options, payload) starts.
pub type Rest = RangeFrom<usize>;

/// A field that ends beyond the bytes given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Short {
    /// Offset just past the field.
    pub end: usize,
    /// How many bytes there were.
    pub len: usize,
}

impl fmt::Display for Short {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "field ends at byte {} of a {}-byte buffer",
            self.end, self.len
        )
    }
}

impl std::error::Error for Short {}

/// Byte order of a multi-byte field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    Big,
    Little,
}

impl Order {
    /// Network byte order.
    pub const NETWORK: Order = Order::Big;
    /// The byte order of this machine (netlink headers and most netlink attributes, NFLOG).
    pub const NATIVE: Order = if cfg!(target_endian = "big") {
        Order::Big
    } else {
        Order::Little
    };
}

/// The `N` bytes of `f` (which must be `N` long) in a header whose constructor checked that they are
/// there. Panics only if a field constant lies outside its header's fixed part: a bug the header's
/// own tests catch, never a property of the input.
#[inline(always)]
pub fn get<const N: usize>(h: &[u8], f: Field) -> [u8; N] {
    debug_assert_eq!(f.len(), N);
    let mut a = [0u8; N];
    a.copy_from_slice(&h[f]);
    a
}

/// The first `N` bytes at `at`, if the buffer holds them.
#[inline(always)]
pub fn bytes<const N: usize>(b: &[u8], at: usize) -> Result<&[u8; N], Short> {
    match b.get(at..).and_then(|s| s.first_chunk::<N>()) {
        Some(a) => Ok(a),
        None => Err(Short {
            end: at.saturating_add(N),
            len: b.len(),
        }),
    }
}

/// The bytes of `f`, if the buffer holds them (a header's fixed part, an address).
#[inline(always)]
pub fn slice(b: &[u8], f: Field) -> Result<&[u8], Short> {
    let end = f.end;
    b.get(f).ok_or(Short { end, len: b.len() })
}

/// The byte at `at`.
#[inline(always)]
pub fn u8(b: &[u8], at: usize) -> Result<u8, Short> {
    b.get(at).copied().ok_or(Short {
        end: at.saturating_add(1),
        len: b.len(),
    })
}

macro_rules! readers {
    ($($ty:ident $n:literal $in_order:ident $be:ident $le:ident $ne:ident;)+) => {$(
        #[doc = concat!("A `", stringify!($ty), "` in byte order `order` at `f` (", stringify!($n), " bytes long).")]
        #[inline(always)]
        pub fn $in_order(order: Order, b: &[u8], f: Field) -> Result<$ty, Short> {
            debug_assert_eq!(f.len(), $n);
            let a = *bytes::<$n>(b, f.start)?;
            Ok(match order {
                Order::Big => $ty::from_be_bytes(a),
                Order::Little => $ty::from_le_bytes(a),
            })
        }
        #[doc = concat!("A big-endian (network order) `", stringify!($ty), "` at `f`.")]
        #[inline(always)]
        pub fn $be(b: &[u8], f: Field) -> Result<$ty, Short> {
            debug_assert_eq!(f.len(), $n);
            bytes::<$n>(b, f.start).map(|a| $ty::from_be_bytes(*a))
        }
        #[doc = concat!("A little-endian `", stringify!($ty), "` at `f`.")]
        #[inline(always)]
        pub fn $le(b: &[u8], f: Field) -> Result<$ty, Short> {
            debug_assert_eq!(f.len(), $n);
            bytes::<$n>(b, f.start).map(|a| $ty::from_le_bytes(*a))
        }
        #[doc = concat!("A host-order `", stringify!($ty), "` at `f` (netlink).")]
        #[inline(always)]
        pub fn $ne(b: &[u8], f: Field) -> Result<$ty, Short> {
            debug_assert_eq!(f.len(), $n);
            bytes::<$n>(b, f.start).map(|a| $ty::from_ne_bytes(*a))
        }
    )+};
}

readers! {
    u16 2 u16_in be16 le16 ne16;
    u32 4 u32_in be32 le32 ne32;
    u64 8 u64_in be64 le64 ne64;
}

/// The field of `N` bytes at `at` (for a field whose place is computed, such as a trailer).
#[inline(always)]
pub const fn at<const N: usize>(at: usize) -> Field {
    at..at + N
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_in_each_byte_order() {
        let b = [1, 2, 3, 4, 5, 6, 7, 8, 9];
        assert_eq!(be16(&b, 0..2), Ok(0x0102));
        assert_eq!(le16(&b, 1..3), Ok(0x0302));
        assert_eq!(be32(&b, 1..5), Ok(0x0203_0405));
        assert_eq!(le32(&b, 0..4), Ok(0x0403_0201));
        assert_eq!(be64(&b, 1..9), Ok(0x0203_0405_0607_0809));
        assert_eq!(u32_in(Order::Big, &b, 0..4), be32(&b, 0..4));
        assert_eq!(u32_in(Order::Little, &b, 0..4), le32(&b, 0..4));
        assert_eq!(u16_in(Order::NATIVE, &b, 0..2), ne16(&b, 0..2));
        assert_eq!(u64_in(Order::NATIVE, &b, 0..8), ne64(&b, 0..8));
        assert_eq!(u8(&b, 8), Ok(9));
        assert_eq!(slice(&b, 2..4), Ok(&[3u8, 4][..]));
        assert_eq!(bytes::<2>(&b, 7), Ok(&[8u8, 9]));
        assert_eq!(at::<4>(12), 12..16);
        assert_eq!(get::<2>(&b, 3..5), [4, 5]);
    }

    #[test]
    fn a_field_beyond_a_truncated_buffer_is_an_error_not_a_panic() {
        let b = [1u8, 2, 3];
        assert_eq!(be16(&b, 2..4), Err(Short { end: 4, len: 3 }));
        assert_eq!(be32(&b, 0..4), Err(Short { end: 4, len: 3 }));
        assert_eq!(ne32(&b, 0..4), Err(Short { end: 4, len: 3 }));
        assert_eq!(le64(&b, 0..8), Err(Short { end: 8, len: 3 }));
        assert_eq!(
            u16_in(Order::Little, &b, 2..4),
            Err(Short { end: 4, len: 3 })
        );
        assert_eq!(u8(&b, 3), Err(Short { end: 4, len: 3 }));
        assert_eq!(slice(&b, 1..5), Err(Short { end: 5, len: 3 }));
        assert_eq!(bytes::<1>(&b, 9), Err(Short { end: 10, len: 3 }));
        assert_eq!(bytes::<1>(&[], usize::MAX).unwrap_err().end, usize::MAX);
        for n in 0..=3 {
            let cut = &b[..n];
            assert_eq!(be16(cut, 1..3).is_ok(), n >= 3, "{n}");
            assert_eq!(u8(cut, 0).is_ok(), n >= 1, "{n}");
        }
        assert_eq!(
            Short { end: 4, len: 3 }.to_string(),
            "field ends at byte 4 of a 3-byte buffer"
        );
    }
}
