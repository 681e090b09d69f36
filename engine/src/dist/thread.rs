//! [`Communicator`] over threads of one process: every collective is an exchange of host buffers
//! through a mutex + condition variable (generation-counted, so a fast rank cannot overwrite a round a
//! slow rank has not read). Tensors are staged through the host, which keeps it exact and simple: it is
//! the reference implementation CI runs at world sizes 2 and 4, not a fast path.
use super::{bytes_f64, f64_bytes, Communicator};
use crate::error::{EngineError, Result};
use crate::tensor::Tensor;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

struct State {
    generation: u64,
    arrived: usize,
    slots: Vec<Option<Vec<u8>>>,
    /// The completed exchange of the last generation.
    result: Option<Arc<Vec<Vec<u8>>>>,
    aborted: Option<String>,
}

struct Shared {
    world: usize,
    state: Mutex<State>,
    cv: Condvar,
    timeout: Duration,
}

#[derive(Clone)]
pub struct ThreadComm {
    rank: usize,
    shared: Arc<Shared>,
}

impl ThreadComm {
    /// Handles for ranks 0..world (give one to each worker thread). A collective that waits longer than
    /// `timeout` for the other ranks fails instead of hanging.
    pub fn group(world: usize, timeout: Duration) -> Vec<ThreadComm> {
        let shared = Arc::new(Shared {
            world,
            state: Mutex::new(State {
                generation: 0,
                arrived: 0,
                slots: vec![None; world],
                result: None,
                aborted: None,
            }),
            cv: Condvar::new(),
            timeout,
        });
        (0..world).map(|rank| ThreadComm { rank, shared: shared.clone() }).collect()
    }

    fn exchange(&self, bytes: Vec<u8>) -> Result<Arc<Vec<Vec<u8>>>> {
        let sh = &self.shared;
        let mut st = sh.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(r) = &st.aborted {
            return Err(aborted(r));
        }
        let generation = st.generation;
        st.slots[self.rank] = Some(bytes);
        st.arrived += 1;
        if st.arrived == sh.world {
            let all: Vec<Vec<u8>> = st.slots.iter_mut().map(|s| s.take().expect("every rank arrived")).collect();
            st.result = Some(Arc::new(all));
            st.arrived = 0;
            st.generation += 1;
            sh.cv.notify_all();
        } else {
            let (guard, wait) = sh
                .cv
                .wait_timeout_while(st, sh.timeout, |s| s.generation == generation && s.aborted.is_none())
                .unwrap_or_else(|e| e.into_inner());
            st = guard;
            if let Some(r) = &st.aborted {
                return Err(aborted(r));
            }
            if wait.timed_out() && st.generation == generation {
                let msg = format!("rank {} waited {:?} for the other ranks", self.rank, sh.timeout);
                st.aborted = Some(msg.clone());
                sh.cv.notify_all();
                return Err(EngineError::Comm(msg));
            }
        }
        Ok(st.result.clone().expect("completed exchange"))
    }
}

fn aborted(reason: &str) -> EngineError {
    EngineError::Aborted(format!("the group was aborted: {reason}"))
}

fn check_len(op: &'static str, t: &Tensor, want: usize) -> Result<()> {
    if t.numel() != want {
        return Err(EngineError::shape(op, format!("expected {want} elements, got {}", t.shape())));
    }
    Ok(())
}

impl Communicator for ThreadComm {
    fn rank(&self) -> usize {
        self.rank
    }
    fn world_size(&self) -> usize {
        self.shared.world
    }

    fn all_reduce_sum(&self, t: &Tensor) -> Result<()> {
        let all = self.exchange(f64_bytes(&t.to_vec_f64()?))?;
        let mut sum = vec![0.0; t.numel()];
        for b in all.iter() {
            check_len("all_reduce_sum", t, b.len() / 8)?;
            sum.iter_mut().zip(bytes_f64(b)).for_each(|(s, x)| *s += x);
        }
        t.copy_from(&Tensor::from_f64(&sum, t.shape().clone(), t.dtype(), t.device())?)
    }

    fn reduce_scatter_sum(&self, input: &Tensor, output: &Tensor) -> Result<()> {
        let k = output.numel();
        check_len("reduce_scatter_sum", input, k * self.shared.world)?;
        let all = self.exchange(f64_bytes(&input.to_vec_f64()?))?;
        let mut sum = vec![0.0; k];
        for b in all.iter() {
            let mine = &b[self.rank * k * 8..(self.rank + 1) * k * 8];
            sum.iter_mut().zip(bytes_f64(mine)).for_each(|(s, x)| *s += x);
        }
        output.copy_from(&Tensor::from_f64(&sum, output.shape().clone(), output.dtype(), output.device())?)
    }

    fn all_gather(&self, input: &Tensor, output: &Tensor) -> Result<()> {
        check_len("all_gather", output, input.numel() * self.shared.world)?;
        let all = self.exchange(f64_bytes(&input.to_vec_f64()?))?;
        let v: Vec<f64> = all.iter().flat_map(|b| bytes_f64(b)).collect();
        check_len("all_gather", output, v.len())?;
        output.copy_from(&Tensor::from_f64(&v, output.shape().clone(), output.dtype(), output.device())?)
    }

    fn all_gather_host(&self, bytes: Vec<u8>) -> Result<Arc<Vec<Vec<u8>>>> {
        self.exchange(bytes)
    }

    fn abort(&self, reason: &str) {
        let mut st = self.shared.state.lock().unwrap_or_else(|e| e.into_inner());
        if st.aborted.is_none() {
            st.aborted = Some(format!("rank {}: {reason}", self.rank));
        }
        self.shared.cv.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{DType, Device};

    fn run<T: Send>(world: usize, f: impl Fn(ThreadComm) -> T + Sync) -> Vec<T> {
        let comms = ThreadComm::group(world, Duration::from_secs(20));
        std::thread::scope(|s| {
            let hs: Vec<_> = comms.into_iter().map(|c| s.spawn(|| f(c))).collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        })
    }

    #[test]
    fn collectives_at_world_sizes_2_and_4() {
        for world in [1, 2, 4] {
            let out = run(world, |c| {
                let r = c.rank() as f64;
                let t = Tensor::from_f64(&[r, 10.0 + r, 1.0], [3], DType::F32, &Device::Cpu).unwrap();
                c.all_reduce_sum(&t).unwrap();
                let full: Vec<f64> = (0..2 * world).map(|i| i as f64 + 100.0 * r).collect();
                let input = Tensor::from_f64(&full, [2 * world], DType::F32, &Device::Cpu).unwrap();
                let shard = Tensor::zeros([2], DType::F32, &Device::Cpu).unwrap();
                c.reduce_scatter_sum(&input, &shard).unwrap();
                let gathered = Tensor::zeros([2 * world], DType::BF16, &Device::Cpu).unwrap();
                c.all_gather(&Tensor::from_f64(&[r, -r], [2], DType::BF16, &Device::Cpu).unwrap(), &gathered).unwrap();
                let total = c.all_reduce_host(r + 1.0).unwrap();
                (t.to_vec_f64().unwrap(), shard.to_vec_f64().unwrap(), gathered.to_vec_f64().unwrap(), total)
            });
            let w = world as f64;
            let rsum = w * (w - 1.0) / 2.0;
            for (rank, (t, shard, gathered, total)) in out.into_iter().enumerate() {
                assert_eq!(t, vec![rsum, 10.0 * w + rsum, w]);
                let i = 2.0 * rank as f64;
                assert_eq!(shard, vec![w * i + 100.0 * rsum, w * (i + 1.0) + 100.0 * rsum]);
                let want: Vec<f64> = (0..world).flat_map(|r| [r as f64, -(r as f64)]).collect();
                assert_eq!(gathered, want);
                assert_eq!(total, w * (w + 1.0) / 2.0);
            }
        }
    }

    #[test]
    fn a_failing_rank_stops_the_others() {
        let out = run(4, |c| {
            if c.rank() == 2 {
                c.abort("out of memory in step 3");
                return Err(EngineError::Comm("failed".into()));
            }
            c.barrier()?;
            c.barrier()
        });
        for (rank, r) in out.into_iter().enumerate() {
            let e = r.unwrap_err().to_string();
            if rank != 2 {
                assert!(e.contains("rank 2: out of memory in step 3"), "{e}");
            }
        }
        // A rank that never shows up is a timeout, not a hang.
        let comms = ThreadComm::group(2, Duration::from_millis(50));
        let e = comms[0].barrier().unwrap_err().to_string();
        assert!(e.contains("waited"), "{e}");
    }
}
