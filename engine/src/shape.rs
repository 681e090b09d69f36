//! Shapes (row-major, contiguous) and numpy-style broadcasting.
use crate::error::{EngineError, Result};
use std::fmt;

#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub struct Shape(Vec<usize>);

impl Shape {
    pub fn new(dims: impl Into<Vec<usize>>) -> Self {
        Shape(dims.into())
    }
    pub fn scalar() -> Self {
        Shape(Vec::new())
    }
    pub fn dims(&self) -> &[usize] {
        &self.0
    }
    pub fn rank(&self) -> usize {
        self.0.len()
    }
    pub fn numel(&self) -> usize {
        self.0.iter().product()
    }
    /// The element count, or an error when it does not fit a `usize` (a shape from untrusted sizes).
    pub fn checked_numel(&self) -> Result<usize> {
        self.0
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .ok_or_else(|| EngineError::invalid("tensor size", format!("shape {self} has more than 2^64 elements")))
    }
    /// Size of dimension `d`; negative `d` counts from the end.
    pub fn dim(&self, d: isize) -> Result<usize> {
        let r = self.rank() as isize;
        let i = if d < 0 { r + d } else { d };
        if i < 0 || i >= r {
            return Err(EngineError::shape("dim", format!("dimension {d} out of range for {self}")));
        }
        Ok(self.0[i as usize])
    }
    /// Last dimension (1 for a scalar).
    pub fn last(&self) -> usize {
        self.0.last().copied().unwrap_or(1)
    }
    /// Product of all dimensions but the last (the "rows" of a row-wise op).
    pub fn rows(&self) -> usize {
        if self.0.is_empty() {
            1
        } else {
            self.numel() / self.last().max(1)
        }
    }
    /// Contiguous row-major strides in elements.
    pub fn strides(&self) -> Vec<usize> {
        let mut s = vec![1; self.rank()];
        for i in (0..self.rank().saturating_sub(1)).rev() {
            s[i] = s[i + 1] * self.0[i + 1];
        }
        s
    }
    /// The shape both `a` and `b` broadcast to (numpy rules: align trailing dims; 1 stretches).
    pub fn broadcast(a: &Shape, b: &Shape, op: &'static str) -> Result<Shape> {
        let r = a.rank().max(b.rank());
        let mut out = vec![0; r];
        for (i, o) in out.iter_mut().enumerate() {
            let da = if i + a.rank() >= r { a.0[i + a.rank() - r] } else { 1 };
            let db = if i + b.rank() >= r { b.0[i + b.rank() - r] } else { 1 };
            *o = if da == db || db == 1 {
                da
            } else if da == 1 {
                db
            } else {
                return Err(EngineError::shape(op, format!("cannot broadcast {a} with {b}")));
            };
        }
        Ok(Shape(out))
    }
    /// Element strides of `self` viewed as broadcast to `target` (0 on stretched dims).
    pub fn broadcast_strides(&self, target: &Shape) -> Vec<usize> {
        let own = self.strides();
        let off = target.rank() - self.rank();
        (0..target.rank()).map(|i| if i < off || self.0[i - off] == 1 { 0 } else { own[i - off] }).collect()
    }
}

impl From<Vec<usize>> for Shape {
    fn from(v: Vec<usize>) -> Self {
        Shape(v)
    }
}
impl From<&[usize]> for Shape {
    fn from(v: &[usize]) -> Self {
        Shape(v.to_vec())
    }
}
impl<const N: usize> From<[usize; N]> for Shape {
    fn from(v: [usize; N]) -> Self {
        Shape(v.to_vec())
    }
}
impl From<&Shape> for Shape {
    fn from(s: &Shape) -> Self {
        s.clone()
    }
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[")?;
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                write!(f, ", ")?;
            }
            write!(f, "{d}")?;
        }
        write!(f, "]")
    }
}
impl fmt::Debug for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn broadcast_rules() {
        let a = Shape::new([4, 1, 3]);
        let b = Shape::new([5, 1]);
        let o = Shape::broadcast(&a, &b, "t").unwrap();
        assert_eq!(o.dims(), &[4, 5, 3]);
        assert_eq!(a.broadcast_strides(&o), vec![3, 0, 1]);
        assert_eq!(b.broadcast_strides(&o), vec![0, 1, 0]);
        let e = Shape::broadcast(&Shape::new([2, 3]), &Shape::new([4]), "add").unwrap_err();
        assert!(e.to_string().contains("cannot broadcast [2, 3] with [4]"), "{e}");
    }
}
