//! How an algorithm chooses: the one step every algorithm writes, the
//! crate's and yours alike.

use super::{Candidates, Context};
use crate::error::PickError;
use crate::table::Backends;

/// An algorithm's choose step: which backend a pick goes to.
///
/// The driver runs it for every pick and does the rest: it takes the
/// plain path when it can, claims what the step chose (the backend's
/// `max_conns` slot, an ejected backend's trial), makes the guard, and
/// turns "nothing found" into the error that says why.
///
/// A state shared by every picking thread implements it for a shared
/// reference (`impl Choose for &MyState`, as std implements `Read` for
/// `&File`) and runs lock-free ([`LockFree`](crate::LockFree)): its
/// interior mutability is its own (atomics). A state that needs `&mut self`
/// implements it for itself and runs behind a mutex
/// ([`Locked`](crate::Locked)), which serialises choose and claim: two
/// picks never see the same counts.
///
/// # What the driver guarantees
///
/// - [`plain`](Self::plain) is called only while every backend is plainly
///   available: up, a primary, under its `max_conns`, not ejected, not
///   ramping up, at its full effective weight, and not tried by this
///   request. Any index below [`Backends::len`] may be answered.
/// - Otherwise [`choose`](Self::choose) is called with the [`Candidates`]
///   of this pick. An index it answers is checked (in range and
///   [`eligible`](Candidates::eligible)) and claimed; when another pick got
///   the last slot or the trial first, `choose` is called again, at most
///   once more per backend, and then the pick takes the first eligible
///   backend that can be claimed or fails with why none can.
/// - The set a step sees does not change during the step: a live balancer
///   builds a new state ([`Build`](crate::Build)) for every change of its
///   backends, weights or order, and a pick that began before an update
///   ends on the state it began with.
///
/// # What a choose step must not do
///
/// - Block or wait: a lock-free step runs on every picking thread at once,
///   a locked one holds every other pick of the balancer.
/// - Allocate, if its balancer is to keep the crate's promise that picks
///   do not.
/// - Panic: a panic unwinds through the caller's pick.
/// - Assume an index it answers is taken: the driver may find it full or
///   its trial claimed and ask again.
///
/// # Examples
///
/// A pick that prefers the backends of the caller's own zone, the least
/// loaded of them, and otherwise the least loaded anywhere
/// (`examples/zone_aware.rs` runs it inside a `Live` set and a `Pool`):
///
/// ```
/// use loadbalance::{
///     BuildError, Backends, Build, Candidates, Choose, Context, PickError, Set,
/// };
///
/// struct ZoneAware {
///     local: Vec<bool>, // per backend: in the caller's zone
/// }
///
/// impl Build<(&'static str, char)> for ZoneAware {
///     type Options = char; // the caller's zone
///     fn build(set: &Set<'_, (&'static str, char)>, zone: &char) -> Result<Self, BuildError> {
///         Ok(Self { local: set.values().map(|(_, z)| z == zone).collect() })
///     }
/// }
///
/// impl ZoneAware {
///     /// The least loaded of the backends `allowed`, local ones first.
///     fn least(&self, backends_active: impl Fn(usize) -> usize, mut allowed: impl FnMut(usize) -> Result<bool, PickError>) -> Result<Option<usize>, PickError> {
///         let mut best: Option<(bool, usize, usize)> = None;
///         for i in 0..self.local.len() {
///             if !allowed(i)? {
///                 continue;
///             }
///             let key = (!self.local[i], backends_active(i), i);
///             if best.is_none_or(|b| key < b) {
///                 best = Some(key);
///             }
///         }
///         Ok(best.map(|(_, _, i)| i))
///     }
/// }
///
/// impl Choose for &ZoneAware {
///     fn plain<T>(&mut self, _: &Context<'_>, backends: &Backends<T>) -> Result<Option<usize>, PickError> {
///         self.least(|i| backends.active(i), |_| Ok(true))
///     }
///
///     fn choose<T>(&mut self, _: &Context<'_>, candidates: &mut Candidates<'_, '_, T>) -> Result<Option<usize>, PickError> {
///         let backends = candidates.backends();
///         self.least(|i| backends.active(i), |i| candidates.eligible(i))
///     }
/// }
///
/// use loadbalance::{Balancer, LockFree, Static};
/// let lb = Static::<_, LockFree<ZoneAware>>::with_options(
///     [(("10.0.0.1:80", 'a'), 1), (("10.0.1.1:80", 'b'), 1), (("10.0.0.2:80", 'a'), 1)],
///     'a',
/// )?;
/// let first = lb.pick(&Context::new())?;
/// let second = lb.pick(&Context::new())?;
/// assert_eq!((first.0, second.0), ("10.0.0.1:80", "10.0.0.2:80")); // zone a, least loaded
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub trait Choose {
    /// The backend for a pick while every backend is plainly available (see
    /// the guarantees above), or `None` to take the general way
    /// ([`choose`](Self::choose)). The default always declines: an
    /// algorithm needs only `choose`, and answers here to be faster.
    ///
    /// # Errors
    ///
    /// A pick the algorithm cannot make (a hash called without a key:
    /// [`PickError::MissingKey`]); the pick fails with it.
    #[inline]
    fn plain<T>(
        &mut self,
        ctx: &Context<'_>,
        backends: &Backends<T>,
    ) -> Result<Option<usize>, PickError> {
        let _ = (ctx, backends);
        Ok(None)
    }

    /// A backend that may take this pick, or `None` when the algorithm
    /// finds none this time (the driver then looks again, and says why none
    /// can).
    ///
    /// # Errors
    ///
    /// As [`plain`](Self::plain), and what
    /// [`Candidates::eligible`] answers when no backend may take the pick.
    fn choose<T>(
        &mut self,
        ctx: &Context<'_>,
        candidates: &mut Candidates<'_, '_, T>,
    ) -> Result<Option<usize>, PickError>;
}
