//! Random selection's states: Vose's alias table and a source of words.

use super::RandomOptions;
use super::alias::{Alias, draw_available};
use super::words::{SeededStream, Words};
use crate::error::{BuildError, PickError};
use crate::pick::{Build, Candidates, Choose, Context, Set};
use crate::table::Backends;

/// Random selection's lock-free state: the alias table and where its
/// random words come from.
pub struct RandomDraw {
    alias: Alias,
    words: Words,
}

impl std::fmt::Debug for RandomDraw {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RandomDraw").finish_non_exhaustive()
    }
}

impl Choose for &RandomDraw {
    #[inline]
    fn plain<T>(&mut self, _: &Context<'_>, _: &Backends<T>) -> Result<Option<usize>, PickError> {
        Ok(Some(self.alias.draw(self.words.word())))
    }

    fn choose<T>(
        &mut self,
        _: &Context<'_>,
        candidates: &mut Candidates<'_, '_, T>,
    ) -> Result<Option<usize>, PickError> {
        draw_available(&self.alias, candidates, &[], || self.words.word())
    }
}

/// Random selection's sequential state: the table and a generator of its
/// own (seeded, or from the operating system when built).
#[derive(Debug)]
pub struct RandomState {
    alias: Alias,
    stream: SeededStream,
}

impl Choose for RandomState {
    #[inline]
    fn plain<T>(&mut self, _: &Context<'_>, _: &Backends<T>) -> Result<Option<usize>, PickError> {
        Ok(Some(self.alias.draw(self.stream.word())))
    }

    fn choose<T>(
        &mut self,
        _: &Context<'_>,
        candidates: &mut Candidates<'_, '_, T>,
    ) -> Result<Option<usize>, PickError> {
        let Self { alias, stream } = self;
        draw_available(alias, candidates, &[], || stream.word())
    }
}

impl<T> Build<T> for RandomDraw {
    type Options = RandomOptions;
    const RESUMES: bool = true;

    fn build(set: &Set<'_, T>, options: &RandomOptions) -> Result<Self, BuildError> {
        Ok(Self {
            alias: Alias::new(set.validated()),
            words: Words::new(options.seed, 0),
        })
    }

    /// A seeded stream goes on where the previous state's left off.
    fn resume(&mut self, previous: &Self) {
        self.words.resume(previous.words.drawn());
    }
}

impl<T> Build<T> for RandomState {
    type Options = RandomOptions;
    const RESUMES: bool = true;

    fn build(set: &Set<'_, T>, options: &RandomOptions) -> Result<Self, BuildError> {
        Ok(Self {
            alias: Alias::new(set.validated()),
            stream: SeededStream::new(options.seed, 0),
        })
    }

    /// As [`RandomDraw`]'s.
    fn resume(&mut self, previous: &Self) {
        self.stream.drawn = previous.stream.drawn;
    }
}
