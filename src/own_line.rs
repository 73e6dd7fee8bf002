//! A value on cache lines of its own.

use std::ops::Deref;

/// Keeps a value that every pick writes (a cursor, an epoch) off the cache
/// lines of the fields every pick only reads. Shared with a read-only
/// field, each write by one core would make the other core's next read of
/// that field miss. 128 bytes: the line and the adjacent one the
/// prefetcher pulls in with it.
#[derive(Debug)]
#[repr(align(128))]
pub(crate) struct OwnLine<T>(pub(crate) T);

impl<T> Deref for OwnLine<T> {
    type Target = T;

    #[inline]
    fn deref(&self) -> &T {
        &self.0
    }
}
