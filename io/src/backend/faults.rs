//! A fault-injecting wrapper around any backend, io_uring included: chosen reads fail with an
//! OS error instead of reaching the kernel. Tests of the pipeline use it to fail prefetches
//! only, demand reads only, or one read in the middle of a layer, on the real read path.

use super::{Backend, RawDone, RawRead, Waker};
use crate::engine::Priority;
use crate::error::Result;

/// Which reads a [`FaultPlan`] fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultTarget {
    /// Reads of prefetch requests only.
    Prefetch,
    /// Reads of demand requests only.
    Demand,
    /// Every read.
    Any,
}

/// Which reads fail, and how.
#[derive(Debug, Clone, Copy)]
pub struct FaultPlan {
    /// The kind of read that fails.
    pub target: FaultTarget,
    /// Matching reads let through before the first failure.
    pub after: u64,
    /// Matching reads failed after that (`u64::MAX`: every one).
    pub count: u64,
    /// The `errno` of the failure (`EIO` by default: a failing disk).
    pub errno: i32,
}

impl FaultPlan {
    /// Fails every read of `target` after the first `after`.
    pub fn every(target: FaultTarget, after: u64) -> Self {
        Self { target, after, count: u64::MAX, errno: libc::EIO }
    }

    /// Fails `count` reads of `target` after the first `after`.
    pub fn some(target: FaultTarget, after: u64, count: u64) -> Self {
        Self { target, after, count, errno: libc::EIO }
    }

    fn matches(&self, p: Priority) -> bool {
        match self.target {
            FaultTarget::Any => true,
            FaultTarget::Prefetch => p == Priority::Prefetch,
            FaultTarget::Demand => p == Priority::Demand,
        }
    }
}

pub(crate) struct FaultyBackend {
    inner: Box<dyn Backend>,
    plan: FaultPlan,
    seen: u64,
    failed: u64,
    /// Failures decided at `push`, reported by the next `wait`.
    injected: Vec<RawDone>,
}

impl FaultyBackend {
    pub(crate) fn new(inner: Box<dyn Backend>, plan: FaultPlan) -> Self {
        Self { inner, plan, seen: 0, failed: 0, injected: Vec::new() }
    }
}

impl Backend for FaultyBackend {
    fn fixed_buffers(&self) -> bool {
        self.inner.fixed_buffers()
    }

    fn push(&mut self, op: RawRead) -> Result<()> {
        if self.plan.matches(op.priority()) {
            self.seen += 1;
            if self.seen > self.plan.after && self.failed < self.plan.count {
                self.failed += 1;
                let error = std::io::Error::from_raw_os_error(self.plan.errno);
                self.injected.push(RawDone { id: op.id(), result: Err(error) });
                return Ok(());
            }
        }
        self.inner.push(op)
    }

    fn submit(&mut self) -> Result<()> {
        self.inner.submit()
    }

    fn wait(&mut self, out: &mut Vec<RawDone>, block: bool) -> Result<()> {
        if self.injected.is_empty() {
            return self.inner.wait(out, block);
        }
        out.append(&mut self.injected);
        self.inner.wait(out, false)
    }

    fn waker(&self) -> Waker {
        self.inner.waker()
    }
}
