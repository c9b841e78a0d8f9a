//! What each fd in the loop's readiness set is for, as the 64-bit token
//! epoll hands back with its readiness.

use crate::pool::{ConnId, Pool};

/// What a registered fd is for; encoded in its epoll token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Token {
    Signals,
    SynQueue,
    Snoop,
    Control,
    Session(usize),
    Listener(usize),
    Client(ConnId),
    Server(ConnId),
}

impl Token {
    pub fn encode(self) -> u64 {
        let (kind, n) = match self {
            Token::Signals => (0, 0),
            Token::SynQueue => (1, 0),
            Token::Snoop => (2, 0),
            Token::Control => (3, 0),
            Token::Session(i) => (4, i as u32),
            Token::Listener(i) => (5, i as u32),
            Token::Client(id) => (6, id.as_u32()),
            Token::Server(id) => (7, id.as_u32()),
        };
        (kind << 32) | u64::from(n)
    }

    /// A connection's token is valid only while its connection lives: an
    /// event for a slot freed earlier in the same batch is dropped.
    pub fn decode<C>(raw: u64, pool: &Pool<C>) -> Option<Token> {
        let n = raw as u32;
        Some(match raw >> 32 {
            0 => Token::Signals,
            1 => Token::SynQueue,
            2 => Token::Snoop,
            3 => Token::Control,
            4 => Token::Session(n as usize),
            5 => Token::Listener(n as usize),
            6 => Token::Client(pool.id_from_u32(n)?),
            7 => Token::Server(pool.id_from_u32(n)?),
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_a_gone_connection_decodes_to_nothing() {
        let pool = Pool::<()>::new(2, 64);
        for t in [
            Token::Signals,
            Token::SynQueue,
            Token::Snoop,
            Token::Control,
            Token::Session(3),
            Token::Listener(1),
        ] {
            assert_eq!(Token::decode(t.encode(), &pool), Some(t));
        }
        // Slot 1, generation 0: no live connection there.
        assert_eq!(Token::decode((6 << 32) | (1 << 16), &pool), None);
        assert_eq!(Token::decode(99 << 32, &pool), None);
    }
}
