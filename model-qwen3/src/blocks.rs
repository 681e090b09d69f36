//! The block pool of a paged KV cache: reference-counted blocks handed out from a free list. A block
//! is free when no sequence references it; shared prompt blocks are referenced by every response of
//! the prompt that is still running.
use crate::error::{ModelError, Result};

pub struct BlockPool {
    free: Vec<i32>,
    refs: Vec<u32>,
}

impl BlockPool {
    pub fn new(blocks: usize) -> Self {
        Self { free: (0..blocks as i32).rev().collect(), refs: vec![0; blocks] }
    }
    pub fn free_blocks(&self) -> usize {
        self.free.len()
    }
    pub fn total(&self) -> usize {
        self.refs.len()
    }
    pub fn in_use(&self) -> usize {
        self.total() - self.free.len()
    }
    /// A fresh block (reference count 1), or None when the pool is dry.
    pub fn take(&mut self) -> Option<i32> {
        let b = self.free.pop()?;
        self.refs[b as usize] = 1;
        Some(b)
    }
    /// One more reference to a held block.
    pub fn share(&mut self, b: i32) {
        debug_assert!(self.refs[b as usize] > 0, "sharing a free block");
        self.refs[b as usize] += 1;
    }
    /// Whether releasing `blocks` would return at least one of them to the free list.
    pub fn frees_any(&self, blocks: &[i32]) -> bool {
        blocks.iter().any(|&b| self.refs[b as usize] == 1)
    }
    /// Drop one reference to each block; a block with none left returns to the free list.
    pub fn release(&mut self, blocks: &[i32]) -> Result<()> {
        for &b in blocks {
            let r = &mut self.refs[b as usize];
            if *r == 0 {
                return Err(ModelError::Invalid(format!("kv cache: block {b} released twice")));
            }
            *r -= 1;
            if *r == 0 {
                self.free.push(b);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_blocks_return_when_the_last_reference_goes() {
        let mut p = BlockPool::new(3);
        let a = p.take().unwrap();
        let b = p.take().unwrap();
        p.share(a);
        assert_eq!((p.free_blocks(), p.in_use()), (1, 2));
        assert!(!p.frees_any(&[a]) && p.frees_any(&[a, b]), "a is shared, b is not");
        p.release(&[a, b]).unwrap();
        assert_eq!(p.free_blocks(), 2, "a is still referenced once");
        p.release(&[a]).unwrap();
        assert_eq!(p.free_blocks(), 3);
        assert!(p.release(&[a]).unwrap_err().to_string().contains("released twice"));
        let _ = (p.take(), p.take(), p.take());
        assert!(p.take().is_none());
    }
}
