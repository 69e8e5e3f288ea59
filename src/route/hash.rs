//! nutcracker's key hash functions (`src/hashkit/nc_*.c`), bit-for-bit; plus Keyway's `murmur3` and
//! Jedis's MurmurHash64A ([`murmur64a`], for `distribution: sharded_jedis`).
//!
//! nutcracker reads keys through `const char *`, and `char` is signed on x86-64: wherever it
//! widens a key byte without an `unsigned char` cast, bytes >= 0x80 are sign-extended
//! (`sext`). That changes where binary keys land, so it is reproduced here function by function.

// These functions are nutcracker's C arithmetic: its truncations (`uint32_t` lengths, 64-bit
// FNV constants cut to 32 bits, a `u8` of the register) are the algorithm, and every table
// index is a byte (< 256) into a 256-entry table.
#![allow(clippy::cast_possible_truncation, clippy::indexing_slicing)]

use md5::{Digest, Md5};

/// A key hash function, named as in nutcracker.yml's `hash:`.
// Variant names follow the config names (`fnv1a_64`), which camel case would blur.
#[allow(non_camel_case_types)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HashFn {
    /// Bob Jenkins' one-at-a-time hash.
    OneAtATime,
    /// The first four bytes of the key's MD5 digest, little-endian.
    Md5,
    /// CRC-16/XMODEM in the low 16 bits; nutcracker 0.5 never masks its `uint32_t`
    /// accumulator, so the high 16 bits keep bits shifted out of earlier rounds.
    Crc16,
    /// libmemcached's CRC-32 variant: bits 16..31 of the CRC-32, masked to 15 bits.
    Crc32,
    /// The standard CRC-32 (IEEE 802.3).
    Crc32a,
    /// FNV-1 over 64 bits, truncated to the low 32.
    Fnv1_64,
    /// FNV-1a with the 64-bit constants truncated to 32 bits (the low 32 bits of FNV-1a 64).
    Fnv1a_64,
    /// FNV-1, 32 bits.
    Fnv1_32,
    /// FNV-1a, 32 bits.
    Fnv1a_32,
    /// Paul Hsieh's SuperFastHash, as nutcracker has it (initial value 0, not the length).
    Hsieh,
    /// MurmurHash2 seeded with `0xdeadbeef * len`.
    Murmur,
    /// Bob Jenkins' lookup3 `hashlittle` with initial value 13.
    Jenkins,
    /// 32-bit MurmurHash3, seed 0: Keyway's extension, unknown to nutcracker.
    Murmur3,
    /// Jedis's MurmurHash64A (seed `0x1234ABCD`, a signed 64-bit value, see [`murmur64a`]):
    /// Keyway's extension, only for `distribution: sharded_jedis`, which uses all 64 bits.
    Murmur64a,
}

impl HashFn {
    /// Every hash function, nutcracker's twelve in its order, then Keyway's `murmur3` and
    /// `murmur64a`.
    pub const ALL: [HashFn; 14] = [
        HashFn::OneAtATime,
        HashFn::Md5,
        HashFn::Crc16,
        HashFn::Crc32,
        HashFn::Crc32a,
        HashFn::Fnv1_64,
        HashFn::Fnv1a_64,
        HashFn::Fnv1_32,
        HashFn::Fnv1a_32,
        HashFn::Hsieh,
        HashFn::Murmur,
        HashFn::Jenkins,
        HashFn::Murmur3,
        HashFn::Murmur64a,
    ];

    /// The hash function with this config name (`fnv1a_64`, `murmur`...), if any.
    pub fn parse(name: &str) -> Option<HashFn> {
        HashFn::ALL.into_iter().find(|hash| hash.name() == name)
    }

    /// The config name, as [`HashFn::parse`] accepts it.
    pub fn name(self) -> &'static str {
        match self {
            HashFn::OneAtATime => "one_at_a_time",
            HashFn::Md5 => "md5",
            HashFn::Crc16 => "crc16",
            HashFn::Crc32 => "crc32",
            HashFn::Crc32a => "crc32a",
            HashFn::Fnv1_64 => "fnv1_64",
            HashFn::Fnv1a_64 => "fnv1a_64",
            HashFn::Fnv1_32 => "fnv1_32",
            HashFn::Fnv1a_32 => "fnv1a_32",
            HashFn::Hsieh => "hsieh",
            HashFn::Murmur => "murmur",
            HashFn::Jenkins => "jenkins",
            HashFn::Murmur3 => "murmur3",
            HashFn::Murmur64a => "murmur64a",
        }
    }

    /// Hashes `key` exactly as nutcracker's `hash_<name>` does, empty keys included (routing
    /// never hashes an empty key: nutcracker gives it hash 0, see `ShardMap::route`).
    /// `murmur64a` answers the low 32 bits of [`murmur64a`] here; only the Jedis ring routes
    /// with it, over all 64.
    pub fn hash(self, key: &[u8]) -> u32 {
        match self {
            HashFn::OneAtATime => one_at_a_time(key),
            HashFn::Md5 => md5_word(&md5_digest(key), 0),
            HashFn::Crc16 => crc16(key),
            HashFn::Crc32 => ((!crc32_raw(key)) >> 16) & 0x7fff,
            HashFn::Crc32a => !crc32_raw(key),
            HashFn::Fnv1_64 => fnv1_64(key),
            HashFn::Fnv1a_64 => fnv1a_64(key),
            HashFn::Fnv1_32 => fnv1_32(key),
            HashFn::Fnv1a_32 => fnv1a_32(key),
            HashFn::Hsieh => hsieh(key),
            HashFn::Murmur => murmur(key),
            HashFn::Jenkins => lookup3(key, JENKINS_INITVAL),
            HashFn::Murmur3 => murmur3(key),
            HashFn::Murmur64a => murmur64a(key) as u32,
        }
    }
}

/// A key byte as C's `(uint32_t)key[i]` sees it through a signed `char`.
#[inline]
fn sext(byte: u8) -> u32 {
    byte as i8 as i32 as u32
}

/// The MD5 digest that nutcracker's `md5_signature` computes.
pub(crate) fn md5_digest(data: &[u8]) -> [u8; 16] {
    Md5::digest(data).into()
}

/// Little-endian word `n` (0..4) of a digest, as `hash_md5` and `ketama_hash` read it.
#[inline]
pub(crate) fn md5_word(digest: &[u8; 16], n: usize) -> u32 {
    let mut word = [0u8; 4];
    for (dst, src) in word.iter_mut().zip(digest.iter().skip(4 * n)) {
        *dst = *src;
    }
    u32::from_le_bytes(word)
}

fn one_at_a_time(key: &[u8]) -> u32 {
    let mut value: u32 = 0;
    for &byte in key {
        value = value.wrapping_add(sext(byte));
        value = value.wrapping_add(value << 10);
        value ^= value >> 6;
    }
    value = value.wrapping_add(value << 3);
    value ^= value >> 11;
    value.wrapping_add(value << 15)
}

/// Table of the CRC-16/CCITT polynomial 0x1021, MSB first; nutcracker 0.5's `crc16tab`.
const CRC16_TABLE: [u16; 256] = {
    let mut table = [0u16; 256];
    let mut n = 0;
    while n < 256 {
        let mut crc = (n as u16) << 8;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
            bit += 1;
        }
        table[n] = crc;
        n += 1;
    }
    table
};

/// Table of the reflected CRC-32 polynomial; nutcracker's `crc32tab`.
const CRC32_TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut n = 0;
    while n < 256 {
        let mut crc = n as u32;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
            bit += 1;
        }
        table[n] = crc;
        n += 1;
    }
    table
};

/// nutcracker 0.5's `hash_crc16`: `crc = (crc << 8) ^ crc16tab[((crc >> 8) ^ *key++) & 0xff]`
/// on a `uint32_t`. The table index only sees bits 8..15 and the masked key byte (so no sign
/// extension), but the returned value keeps all 32 bits. (Later twemproxy master switched to a
/// masked CRC-16/ARC; the Debian 0.5.0 binary routes with this one.)
fn crc16(key: &[u8]) -> u32 {
    let mut crc: u32 = 0;
    for &byte in key {
        crc = (crc << 8) ^ u32::from(CRC16_TABLE[usize::from(((crc >> 8) as u8) ^ byte)]);
    }
    crc
}

/// The CRC-32 register before the final inversion; the sign extension in `hash_crc32` is
/// masked away by its `& 0xff`.
fn crc32_raw(key: &[u8]) -> u32 {
    let mut crc = u32::MAX;
    for &byte in key {
        crc = (crc >> 8) ^ CRC32_TABLE[usize::from((crc as u8) ^ byte)];
    }
    crc
}

const FNV_64_INIT: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_64_PRIME: u64 = 0x0100_0000_01b3;
const FNV_32_INIT: u32 = 2_166_136_261;
const FNV_32_PRIME: u32 = 16_777_619;

fn fnv1_64(key: &[u8]) -> u32 {
    let mut hash = FNV_64_INIT;
    for &byte in key {
        hash = hash.wrapping_mul(FNV_64_PRIME);
        hash ^= byte as i8 as i64 as u64;
    }
    hash as u32
}

/// nutcracker runs this one in 32 bits with both 64-bit constants truncated.
fn fnv1a_64(key: &[u8]) -> u32 {
    let mut hash = FNV_64_INIT as u32;
    for &byte in key {
        hash ^= sext(byte);
        hash = hash.wrapping_mul(FNV_64_PRIME as u32);
    }
    hash
}

fn fnv1_32(key: &[u8]) -> u32 {
    let mut hash = FNV_32_INIT;
    for &byte in key {
        hash = hash.wrapping_mul(FNV_32_PRIME);
        hash ^= sext(byte);
    }
    hash
}

fn fnv1a_32(key: &[u8]) -> u32 {
    let mut hash = FNV_32_INIT;
    for &byte in key {
        hash ^= sext(byte);
        hash = hash.wrapping_mul(FNV_32_PRIME);
    }
    hash
}

#[inline]
fn get16(lo: u8, hi: u8) -> u32 {
    u32::from(u16::from_le_bytes([lo, hi]))
}

fn hsieh(key: &[u8]) -> u32 {
    if key.is_empty() {
        return 0;
    }
    let mut hash: u32 = 0;
    let blocks = key.chunks_exact(4);
    let tail = blocks.remainder();
    for block in blocks {
        if let &[b0, b1, b2, b3] = block {
            hash = hash.wrapping_add(get16(b0, b1));
            let tmp = (get16(b2, b3) << 11) ^ hash;
            hash = (hash << 16) ^ tmp;
            hash = hash.wrapping_add(hash >> 11);
        }
    }
    match *tail {
        [b0, b1, b2] => {
            hash = hash.wrapping_add(get16(b0, b1));
            hash ^= hash << 16;
            // `(uint32_t)key[2]`: the only byte here read through a signed char.
            hash ^= sext(b2) << 18;
            hash = hash.wrapping_add(hash >> 11);
        }
        [b0, b1] => {
            hash = hash.wrapping_add(get16(b0, b1));
            hash ^= hash << 11;
            hash = hash.wrapping_add(hash >> 17);
        }
        [b0] => {
            hash = hash.wrapping_add(u32::from(b0));
            hash ^= hash << 10;
            hash = hash.wrapping_add(hash >> 1);
        }
        _ => {}
    }
    hash ^= hash << 3;
    hash = hash.wrapping_add(hash >> 5);
    hash ^= hash << 4;
    hash = hash.wrapping_add(hash >> 17);
    hash ^= hash << 25;
    hash.wrapping_add(hash >> 6)
}

/// MurmurHash2 with an explicit seed.
fn murmur2(key: &[u8], seed: u32) -> u32 {
    const M: u32 = 0x5bd1_e995;
    let len = key.len() as u32;
    let mut h = seed ^ len;
    let blocks = key.chunks_exact(4);
    let tail = blocks.remainder();
    for block in blocks {
        if let &[b0, b1, b2, b3] = block {
            let mut k = u32::from_le_bytes([b0, b1, b2, b3]);
            k = k.wrapping_mul(M);
            k ^= k >> 24;
            k = k.wrapping_mul(M);
            h = h.wrapping_mul(M) ^ k;
        }
    }
    let (b0, b1, b2) = match *tail {
        [b0, b1, b2] => (b0, b1, b2),
        [b0, b1] => (b0, b1, 0),
        [b0] => (b0, 0, 0),
        _ => (0, 0, 0),
    };
    if !tail.is_empty() {
        h ^= u32::from(b2) << 16;
        h ^= u32::from(b1) << 8;
        h ^= u32::from(b0);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^ (h >> 15)
}

/// nutcracker's `hash_murmur`: MurmurHash2 seeded with `0xdeadbeef * (uint32_t)len`.
fn murmur(key: &[u8]) -> u32 {
    murmur2(key, 0xdead_beef_u32.wrapping_mul(key.len() as u32))
}

const JENKINS_INITVAL: u32 = 13;

#[inline]
fn le32(bytes: &[u8]) -> u32 {
    bytes
        .iter()
        .rev()
        .fold(0, |word, &byte| (word << 8) | u32::from(byte))
}

/// lookup3's `hashlittle`. nutcracker's three read paths (4-byte aligned, 2-byte aligned,
/// bytewise) give the same value on little-endian machines, all reading bytes unsigned.
fn lookup3(key: &[u8], initval: u32) -> u32 {
    let init = 0xdead_beef_u32
        .wrapping_add(key.len() as u32)
        .wrapping_add(initval);
    let (mut a, mut b, mut c) = (init, init, init);
    let mut rest = key;
    while rest.len() > 12 {
        let Some((block, tail)) = rest.split_first_chunk::<12>() else {
            break;
        };
        let (wa, wb, wc) = (le32(&block[..4]), le32(&block[4..8]), le32(&block[8..]));
        a = a.wrapping_add(wa);
        b = b.wrapping_add(wb);
        c = c.wrapping_add(wc);
        (a, b, c) = lookup3_mix(a, b, c);
        rest = tail;
    }
    if rest.is_empty() {
        return c;
    }
    // The last 1..=12 bytes, zero-padded: what the switch's masked reads add.
    let mut block = [0u8; 12];
    for (dst, src) in block.iter_mut().zip(rest) {
        *dst = *src;
    }
    a = a.wrapping_add(le32(&block[..4]));
    b = b.wrapping_add(le32(&block[4..8]));
    c = c.wrapping_add(le32(&block[8..]));
    lookup3_final(a, b, c)
}

#[inline]
fn lookup3_mix(mut a: u32, mut b: u32, mut c: u32) -> (u32, u32, u32) {
    a = a.wrapping_sub(c);
    a ^= c.rotate_left(4);
    c = c.wrapping_add(b);
    b = b.wrapping_sub(a);
    b ^= a.rotate_left(6);
    a = a.wrapping_add(c);
    c = c.wrapping_sub(b);
    c ^= b.rotate_left(8);
    b = b.wrapping_add(a);
    a = a.wrapping_sub(c);
    a ^= c.rotate_left(16);
    c = c.wrapping_add(b);
    b = b.wrapping_sub(a);
    b ^= a.rotate_left(19);
    a = a.wrapping_add(c);
    c = c.wrapping_sub(b);
    c ^= b.rotate_left(4);
    b = b.wrapping_add(a);
    (a, b, c)
}

#[inline]
fn lookup3_final(mut a: u32, mut b: u32, mut c: u32) -> u32 {
    c ^= b;
    c = c.wrapping_sub(b.rotate_left(14));
    a ^= c;
    a = a.wrapping_sub(c.rotate_left(11));
    b ^= a;
    b = b.wrapping_sub(a.rotate_left(25));
    c ^= b;
    c = c.wrapping_sub(b.rotate_left(16));
    a ^= c;
    a = a.wrapping_sub(c.rotate_left(4));
    b ^= a;
    b = b.wrapping_sub(a.rotate_left(14));
    c ^= b;
    c.wrapping_sub(b.rotate_left(24))
}

fn murmur3(key: &[u8]) -> u32 {
    let mut reader = key;
    // Reading from a slice cannot fail; 0 keeps this total without a panic path.
    murmur3::murmur3_32(&mut reader, 0).unwrap_or(0)
}

/// The seed Jedis's `MurmurHash.hash` passes to `hash64A`.
const JEDIS_SEED: u64 = 0x1234_abcd;

/// MurmurHash64A as Jedis's `redis.clients.util.MurmurHash.hash64A(bytes, 0x1234ABCD)`
/// computes it (the same code from Jedis 1.x to 6.x): 8-byte little-endian blocks, the tail
/// zero-padded and read as one more little-endian word, Java's `long` arithmetic (wrapping)
/// and the result as a signed 64-bit value. Jedis hashes a `String` key's UTF-8 bytes.
///
/// ```
/// // Printed by Jedis 2.9.0's own `MurmurHash` (see the unit tests).
/// assert_eq!(keyway::route::hash::murmur64a(b"foo"), -7063922479176959649);
/// ```
pub fn murmur64a(key: &[u8]) -> i64 {
    const M: u64 = 0xc6a4_a793_5bd1_e995;
    const R: u32 = 47;
    let mut h = JEDIS_SEED ^ (key.len() as u64).wrapping_mul(M);
    let mut blocks = key.chunks_exact(8);
    for block in blocks.by_ref() {
        let mut word = [0u8; 8];
        word.copy_from_slice(block);
        let mut k = u64::from_le_bytes(word).wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h ^= k;
        h = h.wrapping_mul(M);
    }
    let tail = blocks.remainder();
    if !tail.is_empty() {
        let mut word = [0u8; 8];
        for (dst, src) in word.iter_mut().zip(tail) {
            *dst = *src;
        }
        h ^= u64::from_le_bytes(word);
        h = h.wrapping_mul(M);
    }
    h ^= h >> R;
    h = h.wrapping_mul(M);
    h ^= h >> R;
    h as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    /// nutcracker's twelve, in the column order of the vector tables.
    const NUTCRACKER: [HashFn; 12] = [
        HashFn::OneAtATime,
        HashFn::Md5,
        HashFn::Crc16,
        HashFn::Crc32,
        HashFn::Crc32a,
        HashFn::Fnv1_64,
        HashFn::Fnv1a_64,
        HashFn::Fnv1_32,
        HashFn::Fnv1a_32,
        HashFn::Hsieh,
        HashFn::Murmur,
        HashFn::Jenkins,
    ];

    fn unhex(hex: &str) -> Vec<u8> {
        (0..hex.len())
            .step_by(2)
            .map(|at| u8::from_str_radix(&hex[at..at + 2], 16).unwrap())
            .collect()
    }

    /// Keys and hashes printed by nutcracker 0.5's `src/hashkit/nc_*.c` functions compiled with
    /// gcc on x86-64 (signed `char`): random lengths 0..=40, binary and printable keys. Routing
    /// with all twelve was also diffed against Debian's `nutcracker` 0.5.0 binary.
    #[rustfmt::skip]
    const NUTCRACKER_VECTORS: [(&str, [u32; 12]); 64] = [
        ("ac26af231a716c915d31183ebcd2ef5122", [0x18d3db69, 0xf6773351, 0xea9217db, 0x00004786, 0xc786a74e, 0xc5878f99, 0x8ff8989d, 0xc777a2f9, 0xb1d575bd, 0x50402752, 0x03145263, 0xfbf5aa3b]),
        ("4fdbd96f396eae2bc8222f0c", [0x387b7c95, 0x6754100c, 0xd148d940, 0x00007214, 0x72145aa3, 0xc5baf520, 0x9e6563fe, 0xea70d140, 0xf35b3d7e, 0x6544537f, 0x183ec7b3, 0x3cb7c62d]),
        ("35693a43565621247c76234c43462c", [0xfdca4535, 0xdcc7d741, 0x0ae63006, 0x00007b23, 0xfb23c8d2, 0x74eca43f, 0x1ffef937, 0xd03b64bf, 0xd64b6177, 0xe949ef36, 0xb8c6b4fb, 0xf538ce0d]),
        ("", [0x00000000, 0xd98c1dd4, 0x00000000, 0x00000000, 0x00000000, 0x84222325, 0x84222325, 0x811c9dc5, 0x811c9dc5, 0x00000000, 0x00000000, 0xdeadbefc]),
        ("7927414655603f486b3d5f49524d4d61406d5f312251626542", [0x5cd2eff3, 0x917d3c3f, 0x88b37c3e, 0x00007f68, 0x7f68baf0, 0xb7abc228, 0x2ce16362, 0x0b464dc8, 0x82768f22, 0x4cfe21dd, 0x36583e8a, 0x68cd4800]),
        ("190c4bb3dfe17c45fb5051677078c904f8430cb44873cbc605", [0xaddc920c, 0x1ac04ff4, 0x71116eb5, 0x00001aa3, 0x1aa33dfe, 0xa0006bc9, 0xae665d79, 0x7385a249, 0x5a3bd139, 0xb7806975, 0x52efb042, 0x0b95fc74]),
        ("58f06dd7e538aceeefedfcef97fe1637bc03e7aab065384349d7593be07f7fe2", [0x29aa4222, 0x3d691dbd, 0x95b76e50, 0x00002f2e, 0xaf2e80bd, 0xcf9e58b7, 0x9aea6cc7, 0x86b21017, 0x9503a227, 0xea162452, 0x9d89081e, 0x59c8c683]),
        ("d6ae2a6766edabb54d73ff968a23320b97ef1c7dba419678f9d2693c", [0x6a0c2709, 0xd47aa9c6, 0xf48ad31d, 0x0000222f, 0x222f167f, 0xe1691f90, 0x6669794e, 0x49a531f0, 0xc2a71fce, 0xbb3d3ab6, 0xcac7094c, 0xa0809bb7]),
        ("cbdb4274e1815f22d71b25a7cef6cb80a11eaaaddf1db0e822d15e042a20", [0xa7609f78, 0xa1b374aa, 0xc8c81026, 0x00000000, 0x80009c5b, 0xc1413032, 0xd2d78488, 0xcb126b92, 0xb833e148, 0x21d43126, 0xd634167e, 0x635fca93]),
        ("1f88baad836a925bdbdbc7ef87fb15eca5b8969f154963809cc986", [0xea55c247, 0x9be4171e, 0x1619e056, 0x00007577, 0xf577c593, 0xafc65866, 0x004b689c, 0xec58ce66, 0xb84ddb7c, 0x37a950c7, 0xe1c6856a, 0xeb70deda]),
        ("5e5d32352e3e63703d3c45603f6b7763294e643c55612f5a", [0x101a74f1, 0xc73bb788, 0x82f9c289, 0x0000651e, 0x651eeabb, 0x8d995aa0, 0x0106d3b6, 0x96ed8b40, 0xf7404576, 0x7c362f4b, 0xdce5138c, 0xf1413bf0]),
        ("462b5264435a4a26463a673c716029544b79573f2f637173286a22703826576b5569", [0x11274317, 0xb8f916de, 0xf2f32ff3, 0x00000268, 0x82683f35, 0xb62ed34e, 0xc1e8a1ec, 0xd3c062ae, 0x0628916c, 0xc6bfca9f, 0xc9ec7765, 0x15074346]),
        ("6983de3308239b13a9480868891db6", [0xd2d67d51, 0x8c27a310, 0x9addb2cd, 0x00004431, 0x443102f6, 0x78afa302, 0xe2c21e54, 0x9d3d60e2, 0x80010414, 0xd15d6a69, 0x164e6441, 0x21fa9f23]),
        ("472a21515742", [0xfb0f0f8d, 0xfa409037, 0x018f3be1, 0x00003036, 0x3036cb21, 0xcb65e653, 0x7a78973f, 0xe3781893, 0xae8a7c7f, 0x7adf6ef5, 0x1a174fd3, 0x47f008c2]),
        ("522d46c1375852135999d986a236b7", [0x130e38d7, 0x4e5d3c17, 0x68c8b478, 0x00001e2f, 0x9e2f62a1, 0xff0f9949, 0x3663fcf1, 0x7e734f89, 0x0b0bf2b1, 0x324033cf, 0xc01b8f97, 0x212245c8]),
        ("38f2ccf6846201a80c05abb6f5f80041ab0589a591920654ccd8bb9d92", [0xf2d2d09e, 0x9f700e97, 0x9c88927b, 0x00002520, 0xa520becf, 0xb3f0f789, 0xb513fc8d, 0xb4530f29, 0x6df60dad, 0x9a4d082c, 0x2bb9329a, 0x55520a18]),
        ("fc57322c172f1dd0cf527ddee4cd1890f24b98878e592080738a", [0x2d3828f4, 0x717dc043, 0xc6af0ac7, 0x00002948, 0x2948ba34, 0x11387d88, 0xc23e33d2, 0x59e71648, 0xf156b932, 0xc607774b, 0x44d5ff97, 0x6c2ba99b]),
        ("7e473a", [0xa29ee7b3, 0xd4ec725d, 0x9f13c04b, 0x0000581a, 0xd81a9c38, 0x6b5c9a06, 0x75c64738, 0x5854ed26, 0x291be338, 0x4061ba81, 0x708ce3ad, 0x4e60151d]),
        ("706a4d", [0xb2fa8c2e, 0x3e8ada01, 0x7ec5a580, 0x00003ccf, 0x3ccf0f42, 0x6b845738, 0x565c5df6, 0x45776138, 0x523e9a56, 0x651c06f1, 0xbdf238d7, 0x4bbf906c]),
        ("aadd3496c075e9c9f2", [0x8081b201, 0xec78ea8d, 0x051cdce0, 0x000047c4, 0xc7c4a763, 0x90966383, 0x7c412067, 0xb68aede3, 0x5e8e2b47, 0xe8ca2eab, 0x1adfe97c, 0x968c0f7f]),
        ("623827683c4d245b", [0x3e4bdf34, 0x1b625410, 0x57ed331d, 0x00001065, 0x1065aac8, 0x9fc9c938, 0x793d2a2a, 0xfa2bef38, 0xc524f88a, 0xbd0d660e, 0x2f52b1f9, 0xc0bb69c8]),
        ("16ae0a2bfe6ee9aed5524e7692aaa53a742bd7aea656ef", [0x74811ee1, 0x0e51fe3c, 0xb2803749, 0x00006ee8, 0xeee8df4b, 0x9c7463c4, 0xd7cdbc7a, 0x66d6a644, 0x9c372d9a, 0xc5799fee, 0x10399d1e, 0x33d4d738]),
        ("5b", [0x5c6338ad, 0x26175481, 0x0000eb9e, 0x00002ebb, 0x2ebb67f1, 0x8601b784, 0x86024f1a, 0x050c5d44, 0xde0c1fba, 0x6cdb9395, 0x613381d2, 0x447643d6]),
        ("524c233d", [0x880d6013, 0xbc67568d, 0xe16c44d4, 0x00005f01, 0xdf0157e1, 0x0c42a35b, 0x88f7bb2f, 0x92b27f9b, 0x9393ca6f, 0xed681101, 0xb5405042, 0x22b34e2c]),
        ("6d554c2c2276524b36614e5c273869246c285c677c7c275565335b355d582564392d28", [0xe44c4ea2, 0x65ba6bd5, 0xc1123519, 0x00007a70, 0x7a706a4b, 0xbef816f0, 0x0b29d61e, 0x36aa2d30, 0xcfdd59be, 0xc0531104, 0xe4e747bc, 0xf3847e07]),
        ("6e394c5c2c", [0xd8e6e8ef, 0xb215b46f, 0xb673cf1a, 0x00003055, 0x30558305, 0xb4800322, 0xa1b116a4, 0x16a14dc2, 0x10688964, 0xd2092ac8, 0x4c278712, 0x5eed4f3f]),
        ("26", [0xb672ecdb, 0x7804ff6c, 0x000044a4, 0x0000000f, 0x000f6a70, 0x8601b7f9, 0x86017e19, 0x050c5d39, 0x230c8c59, 0xcbaa677d, 0x7354d800, 0xa91865ce]),
        ("32268e8353c25ad51f400fa2c4a5f1ef5b6aa2b82d5bf10c4fa1aa5e721402b630d5310babbd11", [0xb7635f1a, 0xf6a060b8, 0xbe7efe49, 0x00007208, 0xf208ced1, 0x07819863, 0xac0adf1f, 0x37c878c3, 0x3372be7f, 0x9475ee67, 0xc8c7668f, 0x9259200c]),
        ("de8e0c8ca0df994677b32b7845dc1e10f4635cab4a5cef6b14", [0xce550145, 0xe938a7cb, 0xe6e6ea5d, 0x000023b5, 0x23b53903, 0xb80cd637, 0x7c319efb, 0x5c450d17, 0x67758d9b, 0xae9531e7, 0xb8f67c75, 0x08a0dff6]),
        ("7e78fce60a", [0x0eeef4f8, 0x84a838a1, 0x6c5a98f5, 0x00007a64, 0x7a641600, 0xf3ed9ce9, 0x65984689, 0xf71ee2e9, 0xaf0d5bc9, 0xc6c1b476, 0x4454c73b, 0x5ab3f9b2]),
        ("adc3fe283b2f", [0x1e8c955a, 0xae17fc6f, 0x39d36c93, 0x00007d71, 0x7d719535, 0x01f034b1, 0x491db339, 0xd9c69691, 0x02608059, 0x4f0a275d, 0x31a45b75, 0x8e4aca3c]),
        ("333c45232d7a277e636643226c3c6972685b4b4c334b2253", [0x369b0db7, 0x9b4cce1d, 0x0e5d0fce, 0x00005776, 0x577613a8, 0x7126da12, 0x81366014, 0xd7ba1812, 0x35c2f8f4, 0x840c0d41, 0xf8559765, 0x30bae87a]),
        ("a370a05d7a02eb", [0x8e79ba8e, 0x9e961b8a, 0x9c030b26, 0x000075c5, 0xf5c5e751, 0xc6d5c628, 0x256b764a, 0x89447e48, 0x0b630bca, 0xd029fc66, 0x2d13c609, 0xfcb0a561]),
        ("73665c4c582f383a40736731745c64335b63", [0xe8b2ad2a, 0x0a192acc, 0x1a6f248c, 0x0000598e, 0xd98eaa54, 0xbecb3691, 0x27caa72d, 0x662d0a51, 0xb4e0eaad, 0x4bde8db8, 0xaea5a06e, 0x7de9dc5f]),
        ("1fc82829fda826e1fdae8a9a8d717da8f8", [0x121d4f1d, 0x29266457, 0x11d507cf, 0x00007312, 0xf31227f9, 0x1d69ac57, 0xf2c4101b, 0x316b69b7, 0x3260a83b, 0x0cf108d0, 0x3a78b299, 0x4277c969]),
        ("a7e503", [0xf140c37a, 0x29ff4835, 0xc529e728, 0x00001976, 0x9976c4e4, 0x6b13ea14, 0x2074522e, 0x56168134, 0x4c52a96e, 0xb838d55d, 0x4d4f0f4e, 0x566d46e7]),
        ("313b99", [0x23b15489, 0xdbfd2f72, 0x26b1396a, 0x00006f89, 0x6f89926d, 0x93c5ab3a, 0xe7f18c74, 0x942a031a, 0xe7d973b4, 0xa0d6bcbc, 0xf0f6e7f8, 0x180efbb8]),
        ("2758405d2d5170304e327438227d3a3836732837412f7b3979215a4f7c756a", [0xbfdd761f, 0x4231d29d, 0x88b3e854, 0x00007bb6, 0x7bb6261f, 0x27a9f610, 0x462efd96, 0x9898d0d0, 0x391929f6, 0xe831086d, 0xd6a4c53c, 0xc192dc83]),
        ("fa3a6f6499de", [0x518c5a3f, 0x87cbdb86, 0xc25f1fa9, 0x00000329, 0x032971d2, 0x5df92761, 0x76121b41, 0x0ed870c1, 0xf826ce21, 0x03fe5ce3, 0xf6795591, 0xbb2d4394]),
        ("b48f4e28", [0x9ba198c6, 0xc50ac617, 0xb280a7e2, 0x00000272, 0x0272901d, 0x33468db4, 0x0db805e2, 0x44160114, 0x081f3562, 0x5ae73b85, 0xb7ca6285, 0x2384a62f]),
        ("7b7c347763785c275c552e2f3e3359522d7a497c402d626c55566e522a415b65445d6662", [0x874466dd, 0x52ab1c7a, 0x03a1ea2f, 0x000037a6, 0x37a6ff8f, 0x60fe4adf, 0x3ed2aa33, 0xe4106d1f, 0x1e3de873, 0x26b1fca4, 0x400bd9a4, 0xaa3a67dd]),
        ("256e29", [0x6753b506, 0x507304db, 0x7474f058, 0x0000780b, 0x780b835c, 0x6c5cd6c9, 0xb7c4ba59, 0x1ef39849, 0xda7806d9, 0xd46ba14f, 0x75ae606b, 0x0fb0925d]),
        ("88d668dced5442f883dddcd10f33da536fcfa2", [0x7eb958e2, 0xada99b7d, 0x618ec1ee, 0x00002fb0, 0xafb07f18, 0xdb35cc28, 0x11a86cba, 0xe0e03088, 0x0e75e8ba, 0x15a72797, 0x356610ec, 0x1e7e4211]),
        ("", [0x00000000, 0xd98c1dd4, 0x00000000, 0x00000000, 0x00000000, 0x84222325, 0x84222325, 0x811c9dc5, 0x811c9dc5, 0x00000000, 0x00000000, 0xdeadbefc]),
        ("e176fc51eeeeb95dbe2d5e49585eb08a748f0efd8ddc98171a3d99010491d0d762b1d36169", [0x84630cff, 0x5f7c1cc2, 0x2beb3fca, 0x00002e44, 0xae444823, 0x6c05dea8, 0xbfe5f992, 0x2cde9608, 0xbdf70692, 0x27c6f235, 0x14eb0ebe, 0xacf17354]),
        ("414158", [0xc10ed946, 0xdabdc3ce, 0x5866cf9d, 0x000002cb, 0x02cb9967, 0x6b531719, 0xa0707a5d, 0x664cb439, 0xaf80e07d, 0xa20464a2, 0x1f52ad07, 0x1b343fa4]),
        ("57390905eaab82bd3c3bc74c0a94a04b", [0x67c06e16, 0x21f3a5dd, 0x56741ebc, 0x000048d4, 0xc8d451bd, 0xcea85f46, 0x09961540, 0x3cb1e646, 0x972c1aa0, 0xe546af1c, 0xcbf8bbfa, 0x4876735a]),
        ("3742593f7b6975772b6c4f50772a5e236f3a456753625a636b4d", [0x2d11fee3, 0xa33d8e93, 0xbed4ca90, 0x00007bab, 0x7bab1812, 0xefbc0dbd, 0x219ab249, 0x2552d83d, 0x47af7bc9, 0x05878373, 0xc35e2035, 0x4853f37d]),
        ("574d6a5b453a5937382e5e263e77", [0xc53e2954, 0x4b376b0d, 0x40c3be5f, 0x00001a69, 0x1a696b5b, 0x5b353366, 0xc45e7df0, 0x2d1b44a6, 0x0813c250, 0x79e8c15a, 0x33e7f20f, 0xc7a2db41]),
        ("763f552778394c3d535e243b2c64247255625349667052243451446b5f74752c21466469", [0x59983318, 0xac73e244, 0xbf0b5ae4, 0x00005109, 0x510966cb, 0xf9b2e447, 0x5a9de19b, 0x7e34f507, 0x724839db, 0x16f5f1db, 0x48cbac36, 0x653f710b]),
        ("79684d5d454e7b363a5c5277337330307850765b383759347672", [0x8467d68a, 0x293e4d42, 0x3c99c245, 0x00005e13, 0x5e1344e5, 0x6547b76a, 0x9a506828, 0x5bbd6a0a, 0xf7729ce8, 0x43eeaab5, 0xa85da9f2, 0x4334ff1d]),
        ("95df022de089ef02e9c6d6bc50885808695fccb07e6d2911dff6ff93581f", [0xf76ef9a8, 0x9353b6c8, 0x83e999d9, 0x00005d41, 0xdd411fa2, 0xc5ee465c, 0x4307a0de, 0x9e11d49c, 0xea737dfe, 0xa7511f7e, 0x42f6f52e, 0xf1455632]),
        ("6557717b39523d454268667b7e3c326c6f7e5c3b2a2e79383a49366c7b73486d445e783d3f", [0xcea61ed9, 0x977645d5, 0x1189291d, 0x00006021, 0xe0211f2e, 0x6a8fd51a, 0xe72cdf5c, 0xd82c6bba, 0xe33b52dc, 0x660cf9c2, 0x55d4ad8b, 0xf6402565]),
        ("c17a6608a1d004fa530dc9325d78a6526939e7a2ec2b683cadf84fbab3d2415e879866b87f", [0x7abece85, 0x67cb8290, 0x5237adcc, 0x00007c78, 0xfc78116e, 0x19c477fd, 0x58b23eb9, 0xbbae82dd, 0xcfc1d499, 0x540df28d, 0xd12339b7, 0x4b2d6ca7]),
        ("7e2123426c2978357a5a2f54766f60247a35772a724b59774f48414d61294c70444f603f6a4a", [0x6faa5cfe, 0xd998951f, 0x82e9a389, 0x0000011f, 0x011f69fa, 0x2cf01ce9, 0xd956b22d, 0x3fd87c29, 0x06961fed, 0x0b759d7f, 0xce31a14f, 0x9f47c6ab]),
        ("d9c33fb6724dd58f23a212f3664642", [0xd0e67c8c, 0xc72406b9, 0xe9c835c2, 0x00002b96, 0x2b969c17, 0x428472cb, 0x8afd3cf3, 0xa0008e4b, 0xb23aeb33, 0xf771d27e, 0x2c5e31e2, 0x40d4a41f]),
        ("29", [0xee22dc3a, 0xa2d77193, 0x0000b54b, 0x000010b0, 0x90b077e1, 0x8601b7f6, 0x86018d64, 0x050c5d36, 0x2c0c9a84, 0xc791a1ef, 0x80e119ea, 0x3f460e63]),
        ("592078af0824bcfa76856510e937589d90ef37b00e8d72744e4c4c7b994e29c64ec454", [0x59eddcb2, 0x1c015cbd, 0x1cf80166, 0x0000679d, 0xe79d45b2, 0x3e86f306, 0xbc758940, 0x092cfc66, 0x47fd6540, 0x6e578d28, 0x3b9a1966, 0x87f13c2b]),
        ("9a0a0e6bdc04874f263d63cf1f9254a1ecd99f916cd5cb7c406f9b52303754e7bb174d416e61", [0x4beed626, 0xa91e6e26, 0xb8518d53, 0x00004d8f, 0x4d8fcaa0, 0x3603c46b, 0xe2b679a3, 0xd817884b, 0xd700cd03, 0x094134db, 0x37422ac7, 0xa9660774]),
        ("567c367a39674b6a567c3d303b754d3a6a3458244e796e61524f2a603c46374068", [0x2c8458d3, 0x6603562a, 0xd87752de, 0x00007ce1, 0xfce1c95c, 0x534ab2f6, 0xea1769b0, 0x97c931d6, 0x64537f30, 0x9aa1015f, 0x836121da, 0x725c278e]),
        ("d7f4b8d91d295271700c9ccac10c562de9e9d4", [0xd530cd83, 0xd22db166, 0x4f6b7a34, 0x00006a5b, 0x6a5b3d7f, 0x266e152c, 0xc35acf96, 0x992186cc, 0x8c136356, 0xf15d6bab, 0xd02286f4, 0xb08e1e6e]),
        ("185e95970345681f8ea65ee47ce2dc9c9c3b74bbed6259ce251bb00e8620f4c1ed06fb3f", [0xc6bca83a, 0xd70aac0d, 0xb2892a1d, 0x000064a1, 0x64a11916, 0x891f3f12, 0x6b2aa90c, 0xd1f9ef52, 0x0099062c, 0xf7eb5653, 0x13ac021f, 0xa6c394b7]),
        ("495cfd49dae72aadb79ba06d17ba2a6742db318d9a2b3e", [0xd0a04f04, 0xf16f1ad1, 0x3288df1d, 0x00007084, 0xf08411af, 0xc928a949, 0xe35f7b65, 0x2b3a1de9, 0x9f61b945, 0x770b0b3f, 0xc6f66ac7, 0x65874a7e]),
        ("5e4c1942c3234d6347d1a23599e2669f38a8b2d1c946a1d4e9e9b0dc0d46da", [0x8869466b, 0x277d6561, 0x6a3d63c9, 0x00006004, 0xe0042dc6, 0xa9e8dc91, 0x475926dd, 0x7d48ebf1, 0x7ad6d17d, 0x433ba6d5, 0x392d27f2, 0x957b6521]),
    ];
    const NUTCRACKER_CHECKSUMS: [u32; 12] = [
        0xc26a5642, 0xa45ef5b4, 0xfee38577, 0xb8aa6a51, 0x38290256, 0xfd262506, 0xffeedb2a,
        0xf370c9c6, 0x2e18d0aa, 0xcf96962e, 0x7872528d, 0xc8acd4f4,
    ];

    /// The xorshift32 key stream the C harness folded its checksums over.
    fn checksum_keys() -> Vec<Vec<u8>> {
        let mut state: u32 = 0x9e37_79b9;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            state
        };
        (0..2000)
            .map(|_| {
                let len = next() % 70;
                (0..len).map(|_| next() as u8).collect()
            })
            .collect()
    }

    #[test]
    fn matches_nutcracker_on_recorded_keys() {
        for (hex, expected) in NUTCRACKER_VECTORS {
            let key = unhex(hex);
            for (hash, want) in NUTCRACKER.into_iter().zip(expected) {
                assert_eq!(hash.hash(&key), want, "{} of {hex:?}", hash.name());
            }
        }
    }

    #[test]
    fn matches_nutcracker_over_2000_binary_keys() {
        let keys = checksum_keys();
        for (hash, want) in NUTCRACKER.into_iter().zip(NUTCRACKER_CHECKSUMS) {
            let got = keys.iter().fold(0u32, |acc, key| {
                acc.wrapping_mul(0x0100_0193) ^ hash.hash(key)
            });
            assert_eq!(got, want, "{}", hash.name());
        }
    }

    #[test]
    fn crc_check_values() {
        let check = b"123456789";
        assert_eq!(HashFn::Crc32a.hash(check), 0xcbf4_3926);
        assert_eq!(HashFn::Crc32.hash(check), 0x4bf4); // (0xcbf43926 >> 16) & 0x7fff
                                                       // CRC-16/XMODEM check value in the low half, the unmasked shifts above it.
        assert_eq!(HashFn::Crc16.hash(check) & 0xffff, 0x31c3);
        assert_eq!(HashFn::Crc16.hash(b"\x01"), 0x1021);
    }

    #[test]
    fn md5_is_first_digest_word_little_endian() {
        // MD5("") = d41d8cd9..., MD5("abc") = 90015098...
        assert_eq!(HashFn::Md5.hash(b""), 0xd98c_1dd4);
        assert_eq!(HashFn::Md5.hash(b"abc"), 0x9850_0190);
    }

    #[test]
    fn fnv_published_vectors() {
        assert_eq!(HashFn::Fnv1_32.hash(b"a"), 0x050c_5d7e);
        assert_eq!(HashFn::Fnv1a_32.hash(b"a"), 0xe40c_292c);
        assert_eq!(HashFn::Fnv1_32.hash(b"foobar"), 0x31f0_b262);
        assert_eq!(HashFn::Fnv1a_32.hash(b"foobar"), 0xbf9c_f968);
        // The 64-bit ones are the low 32 bits of FNV-1 64 / FNV-1a 64.
        assert_eq!(HashFn::Fnv1_64.hash(b"a"), 0x8601_b7be);
        assert_eq!(HashFn::Fnv1a_64.hash(b"a"), 0x8601_ec8c);
        assert_eq!(HashFn::Fnv1_64.hash(b"foobar"), 0xa4dd_a9c2);
        assert_eq!(HashFn::Fnv1a_64.hash(b"foobar"), 0xf739_67e8);
        assert_eq!(HashFn::Fnv1a_32.hash(b""), FNV_32_INIT);
    }

    #[test]
    fn one_at_a_time_published_vectors() {
        assert_eq!(HashFn::OneAtATime.hash(b"a"), 0xca2e_9442);
        let fox = b"The quick brown fox jumps over the lazy dog";
        assert_eq!(HashFn::OneAtATime.hash(fox), 0x519e_91f5);
    }

    #[test]
    fn lookup3_published_vectors() {
        // From lookup3.c's driver5.
        assert_eq!(lookup3(b"", 0), 0xdead_beef);
        assert_eq!(lookup3(b"", 0xdead_beef), 0xbd5b_7dde);
        let four_score = b"Four score and seven years ago";
        assert_eq!(lookup3(four_score, 0), 0x1777_0551);
        assert_eq!(lookup3(four_score, 1), 0xcd62_8161);
    }

    #[test]
    fn murmur3_published_vectors() {
        assert_eq!(HashFn::Murmur3.hash(b""), 0);
        assert_eq!(HashFn::Murmur3.hash(b"hello"), 0x248b_fa47);
        let fox = b"The quick brown fox jumps over the lazy dog";
        assert_eq!(HashFn::Murmur3.hash(fox), 0x2e4f_f723);
    }

    /// Printed by Jedis's own `redis.clients.util.MurmurHash` (the 2.9.0 and 2.10.0 sources,
    /// compiled with OpenJDK 17: `new MurmurHash().hash(key)`, UTF-8 keys). Jedis's tests
    /// hold no literal hash values, only distribution and consistency checks.
    #[test]
    fn murmur64a_matches_jedis() {
        for (key, hash) in [
            ("", 8_371_356_515_094_919_947),
            ("a", 7_990_182_172_224_381_693),
            ("foo", -7_063_922_479_176_959_649),
            ("hello world", -7_467_008_419_718_616_472),
            ("0123456789abcdef", -4_122_218_507_168_152_405),
            ("cache1*10", -2_546_949_878_593_659_129),
            ("SHARD-0-NODE-0", -4_813_603_235_750_630_532),
            ("ключ", -3_939_723_430_367_030_310),
            ("12345678", 5_197_521_178_503_088_135),
        ] {
            assert_eq!(murmur64a(key.as_bytes()), hash, "{key:?}");
        }
        assert_eq!(
            HashFn::Murmur64a.hash(b"foo"),
            (-7_063_922_479_176_959_649_i64) as u32
        );
    }

    #[test]
    fn high_bytes_are_sign_extended_where_nutcracker_does() {
        // fnv1a_32 of one byte b: (init ^ b) * prime, with b widened through a signed char.
        let signed = (FNV_32_INIT ^ 0xffff_ff80).wrapping_mul(FNV_32_PRIME);
        assert_eq!(HashFn::Fnv1a_32.hash(&[0x80]), signed);
        // crc32a reads unsigned bytes: the standard CRC-32 of [0x80].
        assert_eq!(HashFn::Crc32a.hash(&[0x80]), 0x3fba_6cad);
    }

    #[test]
    fn config_names_round_trip() {
        for hash in HashFn::ALL {
            assert_eq!(HashFn::parse(hash.name()), Some(hash));
        }
        let names: Vec<_> = HashFn::ALL.iter().map(|hash| hash.name()).collect();
        assert_eq!(
            names,
            [
                "one_at_a_time",
                "md5",
                "crc16",
                "crc32",
                "crc32a",
                "fnv1_64",
                "fnv1a_64",
                "fnv1_32",
                "fnv1a_32",
                "hsieh",
                "murmur",
                "jenkins",
                "murmur3",
                "murmur64a"
            ]
        );
        assert_eq!(HashFn::parse("FNV1A_64"), None);
        assert_eq!(HashFn::parse(""), None);
        assert_eq!(HashFn::parse("crc32 "), None);
    }
}
