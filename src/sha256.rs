//! SHA-256 of several messages of the same length at once, fed window by window so that
//! only a window of each needs to be in memory. It serves the path real AWS takes: EBS
//! direct hashes every 512 KiB block it sends, a group of blocks at a time (on AVX-512, 16
//! blocks in 0.28 CPU s/GiB against 0.81 one block at a time with `sha2`:
//! `bench/sha-blocks.sh`, docs/benchmarks.md); and the parts of a plain-HTTP S3 upload.
//!
//! One SHA-256 stream is a chain of dependent rounds, which leaves most of a core idle.
//! Hashing independent messages in lockstep fills it:
//! - AVX-512: sixteen messages, one in each 32-bit lane of the vector registers;
//! - SHA extensions: two or three messages, their `sha256rnds2` chains interleaved (four
//!   spill: the SHA instructions reach only 16 registers);
//! - otherwise one by one through the `sha2` crate.
//!
//! Measured on the 2-core EPYC (Zen 5) of our benchmarks, 6 MiB parts in memory, best of
//! six, CPU s/GiB: one stream 0.55 (`sha2`; aws-lc is no faster), three on the SHA
//! extensions 0.36, sixteen on AVX-512 0.22.

use sha2::block_api::compress256;

const H0: [u32; 8] = [
    0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
];

#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
const K: [u32; 64] = [
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
];

/// How the compression function runs; the best the CPU has unless a test asks for another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernel {
    /// Sixteen messages per vector (AVX-512F/BW); fewer left over go to the next best.
    Avx512,
    /// Up to three messages interleaved on the SHA extensions.
    ShaNi,
    /// One message at a time (the `sha2` crate).
    Portable,
}

impl Kernel {
    pub fn best() -> Kernel {
        #[cfg(target_arch = "x86_64")]
        {
            if x16::available() {
                return Kernel::Avx512;
            }
            if shani::available() {
                return Kernel::ShaNi;
            }
        }
        Kernel::Portable
    }

    /// How many messages this kernel hashes at once: the size of a group worth hashing
    /// together.
    pub fn lanes(self) -> usize {
        match self {
            Kernel::Avx512 => 16,
            Kernel::ShaNi => 3,
            Kernel::Portable => 1,
        }
    }

    /// Whether the CPU can run it.
    pub fn runs_here(self) -> bool {
        match self {
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512 => x16::available(),
            #[cfg(target_arch = "x86_64")]
            Kernel::ShaNi => shani::available(),
            #[cfg(not(target_arch = "x86_64"))]
            Kernel::Avx512 | Kernel::ShaNi => false,
            Kernel::Portable => true,
        }
    }

    /// Runs the compression function over every 64-byte block of each window, window i
    /// belonging to the message whose state is `states[i]`.
    fn compress(self, states: &mut [[u32; 8]], windows: &[&[u8]]) {
        debug_assert!(windows.iter().all(|w| w.len().is_multiple_of(64)));
        let mut done = 0;
        #[cfg(target_arch = "x86_64")]
        if self == Kernel::Avx512 {
            assert!(x16::available());
            for (states, windows) in states.chunks_exact_mut(16).zip(windows.chunks_exact(16)) {
                // SAFETY: the CPU has AVX-512F/BW (checked above); 16 states and windows.
                unsafe { x16::compress(states, windows) };
                done += 16;
            }
        }
        let (states, windows) = (&mut states[done..], &windows[done..]);
        #[cfg(target_arch = "x86_64")]
        if self != Kernel::Portable && shani::available() {
            for (states, windows) in states.chunks_mut(3).zip(windows.chunks(3)) {
                shani::compress(states, windows);
            }
            return;
        }
        for (state, window) in states.iter_mut().zip(windows) {
            compress256(state, window.as_chunks::<64>().0);
        }
    }
}

/// SHA-256 of `lanes` messages of equal length, fed in windows.
#[derive(Debug, Clone)]
pub struct Sha256Lanes {
    kernel: Kernel,
    states: Vec<[u32; 8]>,
    /// Bytes fed so far to each message.
    len: u64,
}

impl Sha256Lanes {
    pub fn new(lanes: usize) -> Self {
        Self::with_kernel(lanes, Kernel::best())
    }

    pub fn with_kernel(lanes: usize, kernel: Kernel) -> Self {
        assert!(kernel.runs_here(), "{kernel:?} does not run on this CPU");
        Sha256Lanes {
            kernel,
            states: vec![H0; lanes],
            len: 0,
        }
    }

    /// Feeds the next window of each message: one per message, all of the same length, a
    /// multiple of 64 bytes.
    pub fn update(&mut self, windows: &[&[u8]]) {
        let len = windows.first().map_or(0, |w| w.len());
        assert!(
            windows.len() == self.states.len()
                && len.is_multiple_of(64)
                && windows.iter().all(|w| w.len() == len),
            "one window per message, all the same whole number of blocks"
        );
        self.kernel.compress(&mut self.states, windows);
        self.len += len as u64;
    }

    /// Feeds the last bytes of each message (all of the same length) and returns the
    /// messages' digests.
    pub fn finish(mut self, tails: &[&[u8]]) -> Vec<[u8; 32]> {
        let len = tails.first().map_or(0, |t| t.len());
        assert!(tails.len() == self.states.len() && tails.iter().all(|t| t.len() == len));
        let full = len / 64 * 64;
        let heads: Vec<&[u8]> = tails.iter().map(|t| &t[..full]).collect();
        self.update(&heads);
        // The final one or two blocks: the rest of the tail, 0x80, zeros, the bit length.
        let total = self.len + (len - full) as u64;
        let blocks = if len - full < 56 { 1 } else { 2 };
        let pads: Vec<[u8; 128]> = tails
            .iter()
            .map(|t| {
                let mut pad = [0u8; 128];
                pad[..len - full].copy_from_slice(&t[full..]);
                pad[len - full] = 0x80;
                pad[blocks * 64 - 8..blocks * 64].copy_from_slice(&(total * 8).to_be_bytes());
                pad
            })
            .collect();
        let pads: Vec<&[u8]> = pads.iter().map(|p| &p[..blocks * 64]).collect();
        self.kernel.compress(&mut self.states, &pads);
        self.states
            .iter()
            .map(|state| {
                let mut out = [0u8; 32];
                for (o, w) in out.chunks_exact_mut(4).zip(state) {
                    o.copy_from_slice(&w.to_be_bytes());
                }
                out
            })
            .collect()
    }
}

#[cfg(target_arch = "x86_64")]
mod x16 {
    use super::K;
    use std::arch::x86_64::*;

    pub(super) fn available() -> bool {
        is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512bw")
    }

    /// Transposes a 16 × 16 matrix of u32: `rows[i]` holds block i's 16 words; the result's
    /// element j holds word j of the 16 blocks, lane i from block i.
    #[target_feature(enable = "avx512f,avx512bw")]
    #[inline]
    fn transpose(rows: [__m512i; 16]) -> [__m512i; 16] {
        let zero = _mm512_setzero_si512();
        // Pairs of rows interleaved by 32 bits, then by 64: within each 128-bit lane L,
        // u[4g + k] holds word 4L + k of rows 4g..4g+3.
        let mut t = [zero; 16];
        for i in 0..8 {
            t[2 * i] = _mm512_unpacklo_epi32(rows[2 * i], rows[2 * i + 1]);
            t[2 * i + 1] = _mm512_unpackhi_epi32(rows[2 * i], rows[2 * i + 1]);
        }
        let mut u = [zero; 16];
        for g in 0..4 {
            u[4 * g] = _mm512_unpacklo_epi64(t[4 * g], t[4 * g + 2]);
            u[4 * g + 1] = _mm512_unpackhi_epi64(t[4 * g], t[4 * g + 2]);
            u[4 * g + 2] = _mm512_unpacklo_epi64(t[4 * g + 1], t[4 * g + 3]);
            u[4 * g + 3] = _mm512_unpackhi_epi64(t[4 * g + 1], t[4 * g + 3]);
        }
        // Then 128-bit lanes moved across registers, twice, until word j of rows 0..15 sits
        // in one register.
        let mut v = [zero; 16];
        for k in 0..4 {
            for h in 0..2 {
                let (a, b) = (u[8 * h + k], u[8 * h + 4 + k]);
                v[8 * h + 2 * k] = _mm512_shuffle_i32x4(a, b, 0b10_00_10_00);
                v[8 * h + 2 * k + 1] = _mm512_shuffle_i32x4(a, b, 0b11_01_11_01);
            }
        }
        let mut out = [zero; 16];
        for k in 0..4 {
            for c in 0..2 {
                let (a, b) = (v[2 * k + c], v[8 + 2 * k + c]);
                out[4 * c + k] = _mm512_shuffle_i32x4(a, b, 0b10_00_10_00);
                out[8 + 4 * c + k] = _mm512_shuffle_i32x4(a, b, 0b11_01_11_01);
            }
        }
        out
    }

    // SHA-256's Σ0, Σ1 (rounds) and σ0, σ1 (message schedule): three rotations or shifts
    // XORed in one instruction (0x96 is the truth table of a three-way XOR).
    #[target_feature(enable = "avx512f")]
    #[inline]
    fn big_sigma0(x: __m512i) -> __m512i {
        let (a, b, c) = (
            _mm512_ror_epi32(x, 2),
            _mm512_ror_epi32(x, 13),
            _mm512_ror_epi32(x, 22),
        );
        _mm512_ternarylogic_epi32(a, b, c, 0x96)
    }

    #[target_feature(enable = "avx512f")]
    #[inline]
    fn big_sigma1(x: __m512i) -> __m512i {
        let (a, b, c) = (
            _mm512_ror_epi32(x, 6),
            _mm512_ror_epi32(x, 11),
            _mm512_ror_epi32(x, 25),
        );
        _mm512_ternarylogic_epi32(a, b, c, 0x96)
    }

    #[target_feature(enable = "avx512f")]
    #[inline]
    fn small_sigma0(x: __m512i) -> __m512i {
        let (a, b, c) = (
            _mm512_ror_epi32(x, 7),
            _mm512_ror_epi32(x, 18),
            _mm512_srli_epi32(x, 3),
        );
        _mm512_ternarylogic_epi32(a, b, c, 0x96)
    }

    #[target_feature(enable = "avx512f")]
    #[inline]
    fn small_sigma1(x: __m512i) -> __m512i {
        let (a, b, c) = (
            _mm512_ror_epi32(x, 17),
            _mm512_ror_epi32(x, 19),
            _mm512_srli_epi32(x, 10),
        );
        _mm512_ternarylogic_epi32(a, b, c, 0x96)
    }

    /// All blocks of 16 windows of the same length, window i in the 32-bit lane i.
    ///
    /// # Safety
    /// The CPU must have AVX-512F and AVX-512BW; 16 states and 16 windows, each window the
    /// same whole number of 64-byte blocks.
    #[target_feature(enable = "avx512f,avx512bw")]
    pub(super) unsafe fn compress(states: &mut [[u32; 8]], windows: &[&[u8]]) {
        assert!(states.len() == 16 && windows.len() == 16);
        let mut state: [__m512i; 8] = std::array::from_fn(|w| {
            let words: [u32; 16] = std::array::from_fn(|lane| states[lane][w]);
            // SAFETY: 16 u32s; unaligned load.
            unsafe { _mm512_loadu_si512(words.as_ptr().cast()) }
        });
        for b in 0..windows[0].len() / 64 {
            // SAFETY: block b lies inside every window (same whole number of blocks).
            unsafe {
                block(
                    &mut state,
                    std::array::from_fn(|i| windows[i].as_ptr().add(64 * b)),
                )
            };
        }
        for (w, s) in state.iter().enumerate() {
            let mut words = [0u32; 16];
            // SAFETY: 16 u32s; unaligned store.
            unsafe { _mm512_storeu_si512(words.as_mut_ptr().cast(), *s) };
            for (lane, word) in words.into_iter().enumerate() {
                states[lane][w] = word;
            }
        }
    }

    /// One 64-byte block of each of 16 streams.
    ///
    /// # Safety
    /// As `compress`; each pointer points to 64 readable bytes.
    #[target_feature(enable = "avx512f,avx512bw")]
    #[inline]
    unsafe fn block(state: &mut [__m512i; 8], blocks: [*const u8; 16]) {
        let swap = _mm512_set4_epi32(0x0c0d0e0f, 0x08090a0b, 0x04050607, 0x00010203);
        // Loops, not `array::map`: its closures are not inlined here, and every call would
        // pass vectors through memory (0.44 instead of 0.22 s/GiB).
        let mut rows = [_mm512_setzero_si512(); 16];
        for (row, p) in rows.iter_mut().zip(blocks) {
            // SAFETY: each pointer points to 64 readable bytes (the caller's promise).
            *row = unsafe { _mm512_loadu_si512(p.cast()) };
        }
        let mut w = transpose(rows);
        for x in w.iter_mut() {
            *x = _mm512_shuffle_epi8(*x, swap);
        }
        let [mut a, mut b, mut c, mut d, mut e, mut f, mut g, mut h] = *state;
        // The round's sums are grouped so the longest chain, from e and a to the next
        // e and a, is three operations: h and d are known rounds ahead.
        macro_rules! round {
            ($t:expr, $w:expr) => {{
                let hk = _mm512_add_epi32(h, _mm512_add_epi32($w, _mm512_set1_epi32(K[$t] as i32)));
                let dhk = _mm512_add_epi32(d, hk);
                // Truth tables: 0xCA is "e ? f : g" (Ch), 0xE8 the majority (Maj).
                let ch = _mm512_ternarylogic_epi32(e, f, g, 0xCA);
                let (s1, s0) = (big_sigma1(e), big_sigma0(a));
                let maj = _mm512_ternarylogic_epi32(a, b, c, 0xE8);
                let t1 = _mm512_add_epi32(_mm512_add_epi32(hk, ch), s1);
                let new_e = _mm512_add_epi32(_mm512_add_epi32(dhk, ch), s1);
                let new_a = _mm512_add_epi32(s0, _mm512_add_epi32(maj, t1));
                (h, g, f, e) = (g, f, e, new_e);
                (d, c, b, a) = (c, b, a, new_a);
            }};
        }
        // The 64 rounds written out, so W's indices are constants and W stays in registers.
        macro_rules! step {
            ($t:literal) => {
                if $t >= 16 {
                    // W[t] = σ1(W[t-2]) + W[t-7] + σ0(W[t-15]) + W[t-16], a ring of 16.
                    let (s0, s1) = (
                        small_sigma0(w[($t + 1) % 16]),
                        small_sigma1(w[($t + 14) % 16]),
                    );
                    w[$t % 16] = _mm512_add_epi32(
                        _mm512_add_epi32(w[$t % 16], s0),
                        _mm512_add_epi32(w[($t + 9) % 16], s1),
                    );
                }
                round!($t, w[$t % 16]);
            };
        }
        macro_rules! steps {
                ($($t:literal)*) => { $(step!($t);)* };
            }
        steps!(0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25 26 27 28 29 30 31
                32 33 34 35 36 37 38 39 40 41 42 43 44 45 46 47 48 49 50 51 52 53 54 55 56 57 58 59 60 61 62 63);
        for (s, x) in state.iter_mut().zip([a, b, c, d, e, f, g, h]) {
            *s = _mm512_add_epi32(*s, x);
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod shani {
    use super::K;
    use std::arch::x86_64::*;

    pub(super) fn available() -> bool {
        is_x86_feature_detected!("sha")
            && is_x86_feature_detected!("sse4.1")
            && is_x86_feature_detected!("ssse3")
    }

    /// The state as the SHA instructions want it: (ABEF, CDGH).
    type State = (__m128i, __m128i);

    #[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
    fn load(h: &[u32; 8]) -> State {
        // SAFETY: h holds 8 u32s; unaligned loads.
        let (abcd, efgh) = unsafe {
            (
                _mm_loadu_si128(h.as_ptr().cast()),
                _mm_loadu_si128(h.as_ptr().add(4).cast()),
            )
        };
        let cdab = _mm_shuffle_epi32(abcd, 0xB1);
        let efgh = _mm_shuffle_epi32(efgh, 0x1B);
        (
            _mm_alignr_epi8(cdab, efgh, 8),
            _mm_blend_epi16(efgh, cdab, 0xF0),
        )
    }

    #[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
    fn store((abef, cdgh): State, h: &mut [u32; 8]) {
        let feba = _mm_shuffle_epi32(abef, 0x1B);
        let dchg = _mm_shuffle_epi32(cdgh, 0xB1);
        let dcba = _mm_blend_epi16(feba, dchg, 0xF0);
        let hgfe = _mm_alignr_epi8(dchg, feba, 8);
        // SAFETY: h holds 8 u32s; unaligned stores.
        unsafe {
            _mm_storeu_si128(h.as_mut_ptr().cast(), dcba);
            _mm_storeu_si128(h.as_mut_ptr().add(4).cast(), hgfe);
        }
    }

    /// Runs the compression function on one 64-byte block of each of `N` streams, the
    /// streams' instructions interleaved so their latencies overlap.
    ///
    /// # Safety
    /// Each pointer in `blocks` must point to 64 readable bytes, and the CPU must have the
    /// SHA extensions and SSE4.1.
    #[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
    #[inline]
    unsafe fn block<const N: usize>(state: &mut [State; N], blocks: [*const u8; N]) {
        let swap = _mm_set_epi64x(0x0c0d0e0f08090a0b, 0x0405060700010203);
        let saved = *state;
        let mut w = [[_mm_setzero_si128(); 4]; N];
        // Sixteen groups of four rounds, written out so the compiler keeps W in registers.
        macro_rules! group {
            ($i:literal) => {
                let k = _mm_loadu_si128(K.as_ptr().add(4 * $i).cast());
                for n in 0..N {
                    let wi = if $i < 4 {
                        _mm_shuffle_epi8(_mm_loadu_si128(blocks[n].add(16 * $i).cast()), swap)
                    } else {
                        // W[i] from the four before it: the σ0 terms (msg1), W[i-7], the σ1
                        // terms (msg2).
                        let t = _mm_sha256msg1_epu32(w[n][$i % 4], w[n][($i + 1) % 4]);
                        let t = _mm_add_epi32(
                            t,
                            _mm_alignr_epi8(w[n][($i + 3) % 4], w[n][($i + 2) % 4], 4),
                        );
                        _mm_sha256msg2_epu32(t, w[n][($i + 3) % 4])
                    };
                    w[n][$i % 4] = wi;
                    let (abef, cdgh) = state[n];
                    let wk = _mm_add_epi32(wi, k);
                    let cdgh = _mm_sha256rnds2_epu32(cdgh, abef, wk);
                    let abef = _mm_sha256rnds2_epu32(abef, cdgh, _mm_shuffle_epi32(wk, 0x0E));
                    state[n] = (abef, cdgh);
                }
            };
        }
        group!(0);
        group!(1);
        group!(2);
        group!(3);
        group!(4);
        group!(5);
        group!(6);
        group!(7);
        group!(8);
        group!(9);
        group!(10);
        group!(11);
        group!(12);
        group!(13);
        group!(14);
        group!(15);
        for (now, before) in state.iter_mut().zip(saved) {
            *now = (
                _mm_add_epi32(now.0, before.0),
                _mm_add_epi32(now.1, before.1),
            );
        }
    }

    /// All blocks of `N` windows of the same length through `N` interleaved streams.
    #[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
    fn compress_n<const N: usize>(states: &mut [[u32; 8]], windows: &[&[u8]]) {
        let mut state: [State; N] = std::array::from_fn(|n| load(&states[n]));
        for b in 0..windows[0].len() / 64 {
            // SAFETY: every window holds the same whole number of blocks (Sha256Lanes checks),
            // so block b lies inside each.
            unsafe {
                block::<N>(
                    &mut state,
                    std::array::from_fn(|n| windows[n].as_ptr().add(64 * b)),
                )
            };
        }
        for (s, h) in state.into_iter().zip(states) {
            store(s, h);
        }
    }

    /// One to three windows of the same length, each with its state.
    pub(super) fn compress(states: &mut [[u32; 8]], windows: &[&[u8]]) {
        assert!(available() && states.len() == windows.len());
        // SAFETY: the CPU has the features (checked above).
        unsafe {
            match windows.len() {
                3 => compress_n::<3>(states, windows),
                2 => compress_n::<2>(states, windows),
                1 => compress_n::<1>(states, windows),
                n => unreachable!("{n} windows: the caller passes chunks of three"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};

    fn kernels() -> Vec<Kernel> {
        let (run, not): (Vec<Kernel>, Vec<Kernel>) =
            [Kernel::Avx512, Kernel::ShaNi, Kernel::Portable]
                .into_iter()
                .partition(|k| k.runs_here());
        // Said, not skipped in silence: a CPU without the feature leaves a kernel untested.
        for kernel in not {
            eprintln!("{kernel:?} does not run on this CPU: not tested here");
        }
        run
    }

    fn data(len: usize) -> Vec<u8> {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    /// `lanes` messages of `len` bytes at different places of `data`, hashed by `kernel`
    /// in windows of `window` bytes.
    fn check(kernel: Kernel, data: &[u8], lanes: usize, len: usize, window: usize) {
        let messages: Vec<&[u8]> = (0..lanes).map(|i| &data[i * 131..i * 131 + len]).collect();
        let mut hasher = Sha256Lanes::with_kernel(lanes, kernel);
        let mut at = 0;
        while len - at > window {
            let windows: Vec<&[u8]> = messages.iter().map(|m| &m[at..at + window]).collect();
            hasher.update(&windows);
            at += window;
        }
        let tails: Vec<&[u8]> = messages.iter().map(|m| &m[at..]).collect();
        let want: Vec<[u8; 32]> = messages.iter().map(|m| Sha256::digest(m).into()).collect();
        assert_eq!(
            hasher.finish(&tails),
            want,
            "{kernel:?}, {lanes} messages of {len} bytes in windows of {window}"
        );
    }

    #[test]
    fn every_kernel_matches_sha2_around_the_block_edges() {
        let data = data(40 * 131 + 5000);
        for kernel in kernels() {
            for lanes in [1, 2, 3, 4, 16, 17, 19, 35] {
                for len in (0..140).chain([183, 184, 191, 192, 200, 4095, 4096, 4097]) {
                    check(kernel, &data, lanes, len, 64);
                }
            }
        }
    }

    #[test]
    fn every_kernel_matches_sha2_on_parts_fed_in_windows() {
        let data = data((1 << 20) + 40 * 131);
        for kernel in kernels() {
            for lanes in [3, 16, 18] {
                check(kernel, &data, lanes, 1 << 20, 1 << 18);
                check(kernel, &data, lanes, (1 << 20) - 77, 1 << 16);
            }
        }
    }

    #[test]
    fn windows_must_be_whole_blocks_of_one_length() {
        let data = data(256);
        let uneven = std::panic::catch_unwind(|| {
            Sha256Lanes::new(2).update(&[&data[..64], &data[..128]]);
        });
        assert!(uneven.is_err());
        let partial = std::panic::catch_unwind(|| {
            Sha256Lanes::new(1).update(&[&data[..65]]);
        });
        assert!(partial.is_err());
    }
}
