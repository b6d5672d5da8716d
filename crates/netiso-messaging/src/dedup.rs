//! oslo's duplicate filter: the last 16 `_unique_id`s seen are remembered and repeats dropped
//! (a message can be delivered again after a reconnection).

use std::collections::VecDeque;

/// How many ids oslo remembers.
pub const CAPACITY: usize = 16;

/// A bounded set of recently seen ids.
#[derive(Debug, Default)]
pub struct RecentIds {
    ids: VecDeque<String>,
}

impl RecentIds {
    /// Records `id`; false if it was already among the recent ones.
    pub fn insert(&mut self, id: &str) -> bool {
        if self.ids.iter().any(|seen| seen == id) {
            return false;
        }
        if self.ids.len() == CAPACITY {
            self.ids.pop_front();
        }
        self.ids.push_back(id.to_owned());
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_the_last_sixteen() {
        let mut recent = RecentIds::default();
        assert!(recent.insert("a"));
        assert!(!recent.insert("a"));
        for i in 0..CAPACITY {
            assert!(recent.insert(&i.to_string()));
        }
        assert!(recent.insert("a"), "a fell out after 16 newer ids");
        assert!(!recent.insert("15"));
    }
}
