//! CPU seconds per GiB to hash EBS direct blocks (512 KiB each): one at a time with the
//! `sha2` crate (what src/aws/ebs_direct.rs does), and `LANES` at a time with each kernel
//! of src/sha256.rs that runs here. Single-threaded, so CPU time is the thread's time.
//! Usage: sha-blocks [GIB (default 2)] [ROUNDS (default 5)]; prints one JSON line per way.

#[path = "../../../src/sha256.rs"]
#[allow(dead_code)]
mod sha256;

use sha2::{Digest, Sha256};
use sha256::{Kernel, Sha256Lanes};

const BLOCK: usize = 512 << 10;

/// This thread's CPU time, in seconds.
fn cpu() -> f64 {
    let mut ts = std::mem::MaybeUninit::<[i64; 2]>::uninit();
    // CLOCK_THREAD_CPUTIME_ID = 3 on Linux.
    extern "C" {
        fn clock_gettime(clock: i32, ts: *mut [i64; 2]) -> i32;
    }
    // SAFETY: clock_gettime writes a timespec (two i64 on x86_64 Linux) into `ts`.
    let [s, ns] = unsafe {
        clock_gettime(3, ts.as_mut_ptr());
        ts.assume_init()
    };
    s as f64 + ns as f64 / 1e9
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let gib: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(2);
    let rounds: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(5);
    // Blocks of varied bytes (a xorshift stream): 1 GiB in memory, hashed `gib` times over.
    let mut data = vec![0u8; 1 << 30];
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for chunk in data.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
    let blocks: Vec<&[u8]> = data.chunks(BLOCK).collect();
    let reference: Vec<[u8; 32]> = blocks.iter().map(|b| Sha256::digest(b).into()).collect();

    let mut ways: Vec<(String, Option<Kernel>)> = vec![("sha2, one block per call".into(), None)];
    for kernel in [Kernel::Avx512, Kernel::ShaNi, Kernel::Portable] {
        if kernel.runs_here() {
            ways.push((format!("{kernel:?}, {} blocks per call", kernel.lanes()), Some(kernel)));
        }
    }
    for (name, kernel) in ways {
        let mut best = f64::MAX;
        for _ in 0..rounds {
            let start = cpu();
            for _ in 0..gib {
                let digests: Vec<[u8; 32]> = match kernel {
                    None => blocks.iter().map(|b| Sha256::digest(b).into()).collect(),
                    Some(k) => blocks
                        .chunks(k.lanes())
                        .flat_map(|group| {
                            let mut lanes = Sha256Lanes::with_kernel(group.len(), k);
                            lanes.update(group);
                            lanes.finish(&vec![&[][..]; group.len()])
                        })
                        .collect(),
                };
                assert!(digests == reference, "{name}: a digest differs from sha2's");
            }
            best = best.min((cpu() - start) / gib as f64);
        }
        println!("{{\"way\":\"{name}\",\"cpu_s_per_gib\":{best:.3}}}");
    }
}
