//! Exactly-once commits: the commit record.
//!
//! Every commit writes, in its own transaction, the meta record `commits`: a count of
//! the commits made to the store and up to [`RING`] tokens, newest first: the latest
//! commit's of each of the last writers. A token is a store handle's writer id (random,
//! [`WRITER_BYTES`]) and random bytes, its commit's own (kept across the attempts of
//! one commit); a commit replaces its writer's earlier token. A handle commits one
//! batch at a time, so its entry only leaves the ring when [`RING`] other writers have
//! committed since, not [`RING`] commits (a failover, where other processes commit
//! hundreds of times before a slow one retries, is the case this is for).
//!
//! When an attempt fails after its commit began (a lost `COMMIT` reply, a failed
//! fsync, a connection reset mid-commit), whether it took effect is unknown. The next
//! attempt does not replay it blindly: inside its own write transaction, under the
//! engine's commit lock (redb's write lock; the keyring row lock on a server, which
//! also waits out the earlier attempt's transaction if the server still holds it), it
//! reads the record first:
//!
//! - the token is there: the earlier attempt committed; nothing is written again and
//!   the commit reports success;
//! - the token is not there, and the ring holds another token of the same writer (an
//!   earlier commit of the handle), or fewer than [`RING`] commits were made since the
//!   count the earlier attempt read, or the count went back below it (commits it had
//!   seen were lost, and it came after them): it did not commit; only then is the batch
//!   written again;
//! - otherwise (the token may have been pushed out of the ring): the outcome cannot be
//!   decided, and the commit fails with `outcome_unknown` rather than replay a batch
//!   over other writers' newer commits.
//!
//! The record is not authenticated (it governs nothing that is read back as data):
//! someone who can write the file or the tables can make a retry give up, never make
//! it replay. See `docs/ROWSTORE.md` ("Exactly once").

use crate::error::{Error, Result};
use crate::rowstore::{RowRead, RowWrite, Table};

/// The commit record's name in the meta table.
pub(crate) const META_COMMITS: &str = "commits";

/// Tokens the record keeps.
pub(crate) const RING: usize = 32;

/// Bytes of a commit token.
pub(crate) const TOKEN_BYTES: usize = 16;

/// Leading bytes of a token that name its writer (a store handle).
pub(crate) const WRITER_BYTES: usize = 8;

/// A commit's token.
pub(crate) type Token = [u8; TOKEN_BYTES];

/// The commit record: `count u64 LE ‖ token × n` (n ≤ [`RING`], newest first).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Commits {
    /// Commits made to the store since the record was first written.
    pub(crate) count: u64,
    tokens: Vec<Token>,
}

impl Commits {
    /// Reads the record as `rows` sees it (absent in a store no commit has written
    /// since it gained the record: count 0, no tokens).
    pub(crate) fn read(rows: &dyn RowRead) -> Result<Self> {
        match rows.get(Table::Meta, META_COMMITS.as_bytes())? {
            None => Ok(Self::default()),
            Some(bytes) => Self::decode(&bytes),
        }
    }

    fn decode(bytes: &[u8]) -> Result<Self> {
        let malformed = || Error::Corrupt("the commit record is malformed".into());
        let (count, rest) = bytes.split_first_chunk::<8>().ok_or_else(malformed)?;
        if !rest.len().is_multiple_of(TOKEN_BYTES) || rest.len() > RING * TOKEN_BYTES {
            return Err(malformed());
        }
        let tokens = rest
            .chunks_exact(TOKEN_BYTES)
            .map(|t| {
                let mut token = [0; TOKEN_BYTES];
                token.copy_from_slice(t);
                token
            })
            .collect();
        Ok(Self {
            count: u64::from_le_bytes(*count),
            tokens,
        })
    }

    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(8 + self.tokens.len() * TOKEN_BYTES);
        out.extend_from_slice(&self.count.to_le_bytes());
        for token in &self.tokens {
            out.extend_from_slice(token);
        }
        out
    }

    /// True when `token`'s commit is among the last [`RING`].
    pub(crate) fn contains(&self, token: &Token) -> bool {
        self.tokens.iter().any(|t| t == token)
    }

    /// Records one more commit, `token`'s, in `txn`.
    pub(crate) fn push(mut self, token: Token, txn: &mut dyn RowWrite) -> Result<()> {
        self.advance(token);
        txn.put(Table::Meta, META_COMMITS.as_bytes(), &self.encode())
    }

    fn advance(&mut self, token: Token) {
        self.count = self.count.wrapping_add(1);
        self.tokens
            .retain(|t| t[..WRITER_BYTES] != token[..WRITER_BYTES]);
        self.tokens.insert(0, token);
        self.tokens.truncate(RING);
    }

    /// What the record says of a commit that read `before` as its count and then
    /// failed while committing, with `token`.
    ///
    /// A count below `before` means the store lost commits the attempt had seen: a
    /// failover to an asynchronous standby that never received them (or to a
    /// synchronous one, after a wait for it was cancelled: the commit is then visible on
    /// the primary without being replicated), or an older copy put back. The attempt
    /// committed after those, in the same order on every replica, so it is not there
    /// either.
    pub(crate) fn outcome(&self, token: &Token, before: u64) -> Outcome {
        if self.contains(token) {
            Outcome::Committed
        } else if self
            .tokens
            .iter()
            .any(|t| t[..WRITER_BYTES] == token[..WRITER_BYTES])
            || self.count < before
            || self.count - before < RING as u64
        {
            Outcome::NotCommitted
        } else {
            Outcome::Unknown
        }
    }
}

/// What became of an attempt whose commit may or may not have taken effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// It took effect.
    Committed,
    /// It did not: writing the batch again applies it once.
    NotCommitted,
    /// Too many commits since to tell.
    Unknown,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_keep_the_newest_tokens() {
        let mut c = Commits::default();
        for i in 0..(RING as u8 + 5) {
            c.advance([i; TOKEN_BYTES]);
            c = Commits::decode(&c.encode()).unwrap();
        }
        assert_eq!(c.count, RING as u64 + 5);
        assert_eq!(c.tokens.len(), RING);
        assert_eq!(c.tokens[0], [RING as u8 + 4; TOKEN_BYTES]);
        assert!(!c.contains(&[4; TOKEN_BYTES]));
        assert!(c.contains(&[5; TOKEN_BYTES]));
    }

    /// A token of writer `w`, commit `n`.
    fn token(w: u8, n: u8) -> Token {
        let mut t = [n; TOKEN_BYTES];
        t[..WRITER_BYTES].fill(w);
        t
    }

    #[test]
    fn each_writer_keeps_its_latest_token_however_often_others_commit() {
        let mut c = Commits::default();
        c.advance(token(1, 1));
        let before = c.count;
        // Writer 1's next commit fails uncertainly; two other writers commit far more
        // than the ring holds before it retries.
        for n in 0..200 {
            c.advance(token(2 + n % 2, n));
        }
        assert_eq!(c.tokens.len(), 3, "one token per writer");
        assert!(c.contains(&token(1, 1)));
        // Not there, and its writer's entry is its previous commit: it did not commit.
        assert_eq!(c.outcome(&token(1, 2), before), Outcome::NotCommitted);
        // There: it did.
        c.advance(token(1, 2));
        for n in 0..200 {
            c.advance(token(2 + n % 2, n));
        }
        assert_eq!(c.outcome(&token(1, 2), before), Outcome::Committed);
        // A writer whose entry RING other writers pushed out cannot tell.
        for w in 10..(10 + RING as u8) {
            c.advance(token(w, 0));
        }
        assert_eq!(c.outcome(&token(1, 3), before), Outcome::Unknown);
    }

    #[test]
    fn outcomes() {
        let c = Commits {
            count: 100,
            tokens: vec![[7; TOKEN_BYTES]],
        };
        assert_eq!(c.outcome(&[7; TOKEN_BYTES], 99), Outcome::Committed);
        assert_eq!(c.outcome(&[8; TOKEN_BYTES], 99), Outcome::NotCommitted);
        assert_eq!(
            c.outcome(&[8; TOKEN_BYTES], 100 - RING as u64 + 1),
            Outcome::NotCommitted
        );
        assert_eq!(
            c.outcome(&[8; TOKEN_BYTES], 100 - RING as u64),
            Outcome::Unknown
        );
        // Commits it had seen are gone (a failover lost them): so is it.
        assert_eq!(c.outcome(&[8; TOKEN_BYTES], 101), Outcome::NotCommitted);
        assert_eq!(
            c.outcome(&[8; TOKEN_BYTES], u64::MAX),
            Outcome::NotCommitted
        );
    }

    #[test]
    fn malformed_records_are_refused() {
        for bad in [
            &[0u8; 7][..],
            &[0u8; 9][..],
            &[0u8; 8 + (RING + 1) * TOKEN_BYTES][..],
        ] {
            assert!(matches!(Commits::decode(bad), Err(Error::Corrupt(_))));
        }
    }
}
