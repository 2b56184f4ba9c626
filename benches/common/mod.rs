//! What the harness=false benches share.

/// xorshift64*: deterministic, dependency-free choices.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn below(&mut self, n: u32) -> u32 {
        // The modulo bias is irrelevant for picking benchmark inputs.
        (self.next() % u64::from(n)) as u32
    }
}
