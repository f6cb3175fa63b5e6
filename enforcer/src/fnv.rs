//! A small, fast hasher for maps keyed by the policy's own short names.

/// FNV-1a, for the by-command pattern index. Command names are a few bytes, and the keys are
/// the policy's own (a lookup never inserts), so SipHash's resistance to crafted keys buys
/// nothing there and costs more than the rest of the lookup.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl std::hash::Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
}
