//! A small binary codec for what data-parallel ranks exchange on the host (rollout samples, token
//! scores): little-endian scalars and length-prefixed typed slices, read back in the same order.
use crate::error::{Error, Result};

#[derive(Default)]
pub struct Writer(pub Vec<u8>);

impl Writer {
    pub fn u64(&mut self, x: u64) {
        self.0.extend_from_slice(&x.to_le_bytes());
    }
    pub fn f64(&mut self, x: f64) {
        self.0.extend_from_slice(&x.to_le_bytes());
    }
    pub fn bytes(&mut self, b: &[u8]) {
        self.u64(b.len() as u64);
        self.0.extend_from_slice(b);
    }
    pub fn u32s(&mut self, v: &[u32]) {
        self.bytes(bytemuck::cast_slice(v));
    }
    pub fn i32s(&mut self, v: &[i32]) {
        self.bytes(bytemuck::cast_slice(v));
    }
    pub fn f32s(&mut self, v: &[f32]) {
        self.bytes(bytemuck::cast_slice(v));
    }
    pub fn usizes(&mut self, v: &[usize]) {
        let w: Vec<u64> = v.iter().map(|&x| x as u64).collect();
        self.bytes(bytemuck::cast_slice(&w));
    }
}

pub struct Reader<'a> {
    buf: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf, at: 0 }
    }
    pub fn done(&self) -> bool {
        self.at >= self.buf.len()
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let s = (self.at.checked_add(n))
            .and_then(|end| self.buf.get(self.at..end))
            .ok_or_else(|| Error::Exchange("truncated message from another rank".into()))?;
        self.at += n;
        Ok(s)
    }
    pub fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().expect("8 bytes")))
    }
    pub fn f64(&mut self) -> Result<f64> {
        Ok(f64::from_le_bytes(self.take(8)?.try_into().expect("8 bytes")))
    }
    pub fn bytes(&mut self) -> Result<&'a [u8]> {
        let n = self.u64()? as usize;
        self.take(n)
    }
    fn typed<T: bytemuck::Pod>(&mut self) -> Result<Vec<T>> {
        // Copy out: the buffer is not aligned for T.
        Ok(self.bytes()?.chunks_exact(size_of::<T>()).map(bytemuck::pod_read_unaligned).collect())
    }
    pub fn u32s(&mut self) -> Result<Vec<u32>> {
        self.typed()
    }
    pub fn i32s(&mut self) -> Result<Vec<i32>> {
        self.typed()
    }
    pub fn f32s(&mut self) -> Result<Vec<f32>> {
        self.typed()
    }
    pub fn usizes(&mut self) -> Result<Vec<usize>> {
        Ok(self.typed::<u64>()?.into_iter().map(|x| x as usize).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let mut w = Writer::default();
        w.u64(7);
        w.f64(-1.5);
        w.u32s(&[1, 2, 3]);
        w.f32s(&[0.5]);
        w.usizes(&[9, 10]);
        w.bytes(b"src");
        let mut r = Reader::new(&w.0);
        assert_eq!(r.u64().unwrap(), 7);
        assert_eq!(r.f64().unwrap(), -1.5);
        assert_eq!(r.u32s().unwrap(), vec![1, 2, 3]);
        assert_eq!(r.f32s().unwrap(), vec![0.5]);
        assert_eq!(r.usizes().unwrap(), vec![9, 10]);
        assert_eq!(r.bytes().unwrap(), b"src");
        assert!(r.done());
        assert!(r.u64().is_err());
    }
}
