//! The two forms an algorithm's state runs in: shared by every picking
//! thread without a lock ([`LockFree`]), or behind a mutex ([`Locked`]).
//! One generic wrapper each serves every algorithm, the crate's and yours.

use std::fmt;
use std::str::FromStr;

use crossbeam_utils::CachePadded;

use super::{Choose, Context, driver};
use crate::error::PickError;
use crate::sync::Mutex;
use crate::table::{Backends, Guard};

/// The lock-free form: the state `S` shared by every picking thread, which
/// chooses through `&S` (`&S: Choose`): atomics only, no lock and, for the
/// crate's algorithms, no allocation on the pick path.
pub struct LockFree<S>(S);

/// The mutex-backed form: the state `S` (`S: Choose`, by `&mut self`) behind
/// a mutex (`parking_lot`'s; the lock word and the state on cache lines of
/// their own). The guard is taken while the lock is held, so the next pick
/// already sees it: two picks never see the same minimum.
pub struct Locked<S>(CachePadded<Mutex<S>>);

/// How an algorithm's state is shared by the threads that pick:
/// [`LockFree`] or [`Locked`]. Sealed: those two are all there is.
pub trait Sharing: sealed::SealedSharing + Send + Sync + Sized {
    /// The algorithm's state.
    type State;
    /// Which form this is.
    const FORM: Form;

    /// Wraps a state built for this form.
    #[doc(hidden)]
    fn wrap(state: Self::State) -> Self;

    /// Reads the state (under its lock, in the locked form).
    #[doc(hidden)]
    fn with_state<R>(&self, read: impl FnOnce(&Self::State) -> R) -> R;

    /// Changes the state, which no pick shares while `&mut self` is held.
    #[doc(hidden)]
    fn with_state_mut<R>(&mut self, change: impl FnOnce(&mut Self::State) -> R) -> R;

    /// One pick over `backends`.
    #[doc(hidden)]
    fn pick<T>(&self, ctx: &Context<'_>, backends: &Backends<T>) -> Result<Guard<T>, PickError>;
}

mod sealed {
    pub trait SealedSharing {}
    impl<S> SealedSharing for super::LockFree<S> {}
    impl<S> SealedSharing for super::Locked<S> {}
}

impl<S> Sharing for LockFree<S>
where
    S: Send + Sync,
    for<'a> &'a S: Choose,
{
    type State = S;
    const FORM: Form = Form::LockFree;

    fn wrap(state: S) -> Self {
        Self(state)
    }

    fn with_state<R>(&self, read: impl FnOnce(&S) -> R) -> R {
        read(&self.0)
    }

    fn with_state_mut<R>(&mut self, change: impl FnOnce(&mut S) -> R) -> R {
        change(&mut self.0)
    }

    #[inline]
    fn pick<T>(&self, ctx: &Context<'_>, backends: &Backends<T>) -> Result<Guard<T>, PickError> {
        driver::pick(&mut &self.0, ctx, backends)
    }
}

impl<S> Sharing for Locked<S>
where
    S: Send + Choose,
{
    type State = S;
    const FORM: Form = Form::Locked;

    fn wrap(state: S) -> Self {
        Self(CachePadded::new(Mutex::new(state)))
    }

    fn with_state<R>(&self, read: impl FnOnce(&S) -> R) -> R {
        read(&self.0.lock())
    }

    fn with_state_mut<R>(&mut self, change: impl FnOnce(&mut S) -> R) -> R {
        change(&mut self.0.lock())
    }

    #[inline]
    fn pick<T>(&self, ctx: &Context<'_>, backends: &Backends<T>) -> Result<Guard<T>, PickError> {
        // The guard is taken while the lock is held, so the next pick
        // already sees this connection: two picks never see the same
        // minimum.
        driver::pick(&mut *self.0.lock(), ctx, backends)
    }
}

impl<S> fmt::Debug for LockFree<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("LockFree").finish_non_exhaustive()
    }
}

impl<S> fmt::Debug for Locked<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Locked").finish_non_exhaustive()
    }
}

/// Which form of an algorithm runs (see [`docs`](crate::docs)): the names
/// a [`Pool`](crate::Pool)'s configuration uses for [`LockFree`] and
/// [`Locked`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Form {
    /// Atomics only: no lock and no allocation on the pick path.
    #[default]
    LockFree,
    /// The sequential algorithm behind a mutex.
    Locked,
}

impl fmt::Display for Form {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::LockFree => "lockfree",
            Self::Locked => "locked",
        })
    }
}

/// `lockfree` (or `lock_free`) and `locked`.
impl FromStr for Form {
    type Err = ParseFormError;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        match name.trim() {
            "lockfree" | "lock_free" => Ok(Self::LockFree),
            "locked" => Ok(Self::Locked),
            _ => Err(ParseFormError {
                input: name.to_owned(),
            }),
        }
    }
}

/// A name that is not a form's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseFormError {
    input: String,
}

impl fmt::Display for ParseFormError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown form {:?}: expected lockfree or locked",
            self.input
        )
    }
}

impl std::error::Error for ParseFormError {}
