//! A backend as a live set takes it: its value and what it is configured
//! with.

use crate::backend::record::{Record, flag};

/// A backend as a live balancer takes it: the value (also its identity),
/// weight, connection limit and role.
///
/// # Examples
///
/// ```
/// use loadbalance::Backend;
///
/// let primary = Backend::new("10.0.0.1:80").weight(5).max_conns(100);
/// let standby = Backend::new("10.0.9.1:80").backup(true);
/// # drop((primary, standby));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Backend<T> {
    pub(super) value: T,
    pub(super) weight: u32,
    max_conns: u32,
    backup: bool,
    state: AdminState,
}

/// What a backend is configured with besides its value.
pub(super) struct Settings {
    pub(super) weight: u32,
    pub(super) max_conns: u32,
    pub(super) backup: bool,
    pub(super) state: AdminState,
}

impl<T> Backend<T> {
    pub(super) fn settings(&self) -> Settings {
        Settings {
            weight: self.weight,
            max_conns: self.max_conns,
            backup: self.backup,
            state: self.state,
        }
    }

    /// A primary backend of weight 1 with no connection limit.
    pub fn new(value: T) -> Self {
        Self {
            value,
            weight: 1,
            max_conns: 0,
            backup: false,
            state: AdminState::Up,
        }
    }

    /// Its weight (algorithms without weights ignore it). 0 is rejected when
    /// the backend is added.
    #[must_use]
    pub fn weight(mut self, weight: u32) -> Self {
        self.weight = weight;
        self
    }

    /// At most `max_conns` active guards at once; 0 (the default) means no
    /// limit, as in nginx.
    #[must_use]
    pub fn max_conns(mut self, max_conns: u32) -> Self {
        self.max_conns = max_conns;
        self
    }

    /// A backup takes picks only while no primary backend can.
    #[must_use]
    pub fn backup(mut self, backup: bool) -> Self {
        self.backup = backup;
        self
    }

    /// Its operator state (default: up): a backend can join the set down
    /// or draining.
    #[must_use]
    pub fn state(mut self, state: AdminState) -> Self {
        self.state = state;
        self
    }

    /// The backend's value, its identity.
    pub fn value(&self) -> &T {
        &self.value
    }
}

/// An operator's say over a backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum AdminState {
    /// Takes picks (after slow start, if the policy has one and the backend
    /// was down or draining).
    Up,
    /// No new picks; existing guards stay valid.
    Down,
    /// No new picks while existing guards finish: the step before removal.
    Draining,
}

/// Sets a record's weight, limit, role and operator state as `settings`
/// say.
pub(super) fn configure(record: &Record, settings: &Settings) {
    record.set_weight(settings.weight);
    record.set_flags(flag::BACKUP, settings.backup);
    record.set_max_conns((settings.max_conns > 0).then_some(settings.max_conns));
    record.set_admin(match settings.state {
        AdminState::Up => 0,
        AdminState::Down => flag::DOWN,
        AdminState::Draining => flag::DRAINING,
    });
}
