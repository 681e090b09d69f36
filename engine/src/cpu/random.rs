//! Counter-based normal samples, bit-identical in spirit to `randn_*` in kernels-cu/cuda/elementwise.cu:
//! element i depends only on (seed, i), so a tensor can be filled in parallel on any device.
pub fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// std · N(0, 1) for element `i` (Box–Muller over two hashed uniforms), rounded to f32.
pub fn hashed_normal(seed: u64, i: u64, std: f32) -> f32 {
    let h1 = splitmix64(seed ^ (2 * i));
    let h2 = splitmix64(seed ^ (2 * i + 1));
    let u1 = ((h1 >> 11) as f64 + 1.0) / 9_007_199_254_740_992.0;
    let u2 = (h2 >> 11) as f64 / 9_007_199_254_740_992.0;
    (std as f64 * (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
}
