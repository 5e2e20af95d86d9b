//! The encoder: byte-pair merges of one piece, by rank, for short pieces
//! directly and for long ones with a min-tree of candidate pairs.

use super::*;

impl Bpe {
    /// The rank of the token `bytes`, if it is one.
    #[inline]
    pub(crate) fn rank(&self, bytes: &[u8]) -> Option<u32> {
        self.index
            .find(hash_bytes(bytes), |&rank| {
                token_bytes(&self.bytes, &self.offsets, rank) == bytes
            })
            .copied()
    }

    /// The rank of `piece[start..end]`, or [`NO_RANK`].
    #[inline]
    pub(crate) fn rank_of(&self, piece: &[u8], start: usize, end: usize) -> u32 {
        piece
            .get(start..end)
            .and_then(|bytes| self.rank(bytes))
            .unwrap_or(NO_RANK)
    }

    /// tiktoken's `byte_pair_merge` for a piece of 2 to [`SHORT_PIECE`]
    /// bytes: returns the number of parts left.
    pub(crate) fn merge_short(&self, piece: &[u8]) -> usize {
        let n = piece.len();
        if n > SHORT_PIECE {
            return self.merge_long::<usize>(piece);
        }
        // Part k starts at `start[k]`; `rank[k]` is the rank of merging part k
        // with part k + 1. Entry `len - 1` is the end of the piece.
        let mut start = [0u8; SHORT_PIECE + 1];
        let mut rank = [NO_RANK; SHORT_PIECE + 1];
        for i in 0..=n {
            // n <= SHORT_PIECE < 256.
            start[i] = i as u8;
            if i + 1 < n {
                rank[i] = self.rank_of(piece, i, i + 2);
            }
        }
        let mut len = n + 1;
        // The rank of merging part k with part k + 1, once part k + 1 has been
        // merged into part k + 2 but is still in the array (as tiktoken does).
        let merged_rank = |start: &[u8; SHORT_PIECE + 1], len: usize, k: usize| {
            if k + 3 < len {
                self.rank_of(piece, usize::from(start[k]), usize::from(start[k + 3]))
            } else {
                NO_RANK
            }
        };
        loop {
            let mut best = (NO_RANK, 0);
            for (k, &r) in rank[..len - 1].iter().enumerate() {
                if r < best.0 {
                    best = (r, k);
                }
            }
            if best.0 == NO_RANK {
                break;
            }
            let i = best.1;
            if i > 0 {
                rank[i - 1] = merged_rank(&start, len, i - 1);
            }
            rank[i] = merged_rank(&start, len, i);
            start.copy_within(i + 2..len, i + 1);
            rank.copy_within(i + 2..len, i + 1);
            len -= 1;
        }
        len - 1
    }

    /// The same merges as [`Bpe::merge_short`] in O(n log n), for long
    /// pieces, with a [`MinTree`] over the parts' pair ranks. Returns the
    /// number of parts left. `I` holds positions: `u32` whenever the piece is
    /// short enough, to halve the memory.
    pub(crate) fn merge_long<I: Pos>(&self, piece: &[u8]) -> usize {
        let n = piece.len();
        if n < 2 {
            return n;
        }
        // Node i describes the part starting at byte i, if there is one
        // (`end` is 0 otherwise); its `pair` is the leaf i of the tree.
        let mut nodes: Vec<Node<I>> = (0..n)
            .map(|i| Node {
                end: I::new(i + 1),
                pair: NO_RANK,
            })
            .collect();
        for (i, node) in nodes.iter_mut().enumerate().take(n - 1) {
            node.pair = self.rank_of(piece, i, i + 2);
        }
        let mut tree = MinTree::new(&nodes);
        let mut parts = n;
        loop {
            let left = tree.min();
            let Some(&Node { end, pair }) = nodes.get(left) else {
                break;
            };
            if pair == NO_RANK {
                break; // no adjacent pair is a token
            }
            // Merge the part at `left` with the one after it, at `right`.
            let right = end.get();
            let right_end = nodes[right].end.get();
            nodes[right] = Node {
                end: I::new(0),
                pair: NO_RANK,
            };
            tree.update(&nodes, right);
            parts -= 1;
            // The new pair to the right: this part and the one at `right_end`.
            let next = match nodes.get(right_end) {
                Some(after) => self.rank_of(piece, left, after.end.get()),
                None => NO_RANK,
            };
            nodes[left] = Node {
                end: I::new(right_end),
                pair: next,
            };
            tree.update(&nodes, left);
            // The new pair to the left: the previous part and this one. The
            // previous part is a token, so it starts at most `max_token`
            // bytes before; the positions in between hold no part.
            if let Some(before) = (left.saturating_sub(self.max_token)..left)
                .rev()
                .find(|&i| nodes[i].end.get() != 0)
            {
                nodes[before].pair = self.rank_of(piece, before, right_end);
                tree.update(&nodes, before);
            }
        }
        parts
    }
}

/// A part of a piece in [`Bpe::merge_long`], by the position it starts at.
#[derive(Clone, Copy)]
pub(crate) struct Node<I> {
    /// Where the part ends (the next part starts); 0 if no part starts here.
    pub(crate) end: I,
    /// The rank of merging this part with the next one; [`NO_RANK`] if that
    /// is not a token, or if no part starts here any more.
    pub(crate) pair: u32,
}

/// A position in a piece, as stored by [`Bpe::merge_long`]: `u32` when the
/// piece is short enough, to halve the memory, else `usize`.
pub(crate) trait Pos: Copy {
    fn new(i: usize) -> Self;
    fn get(self) -> usize;
}

impl Pos for u32 {
    // Only used for pieces shorter than u32::MAX bytes.
    #[inline]
    fn new(i: usize) -> u32 {
        i as u32
    }
    #[inline]
    fn get(self) -> usize {
        self as usize
    }
}

impl Pos for usize {
    #[inline]
    fn new(i: usize) -> usize {
        i
    }
    #[inline]
    fn get(self) -> usize {
        self
    }
}

/// The lowest (rank, position) among the parts of [`Bpe::merge_long`]: a
/// tournament tree over the nodes' `pair`s, whose inner node k holds the
/// position of the smallest leaf below it (inner node 1 is the root; the
/// children of k are 2k and 2k + 1; child c >= n is leaf c - n). Comparing
/// (rank, position) makes ties go to the leftmost pair, as in tiktoken, and
/// makes the tree's shape irrelevant. It takes one position per byte and no
/// stale entries, unlike a heap of candidate merges, and an update stops
/// climbing as soon as a subtree's minimum is unchanged.
pub(crate) struct MinTree<I> {
    /// Inner nodes; index 0 is unused.
    pub(crate) inner: Vec<I>,
}

impl<I: Pos> MinTree<I> {
    pub(crate) fn new(nodes: &[Node<I>]) -> MinTree<I> {
        let n = nodes.len();
        let mut tree = MinTree {
            inner: vec![I::new(0); n],
        };
        for k in (1..n).rev() {
            let min = tree.smaller(nodes, 2 * k, 2 * k + 1);
            tree.inner[k] = I::new(min);
        }
        tree
    }

    /// The position of the lowest pair (0 if there are fewer than two
    /// nodes; check its rank).
    #[inline]
    pub(crate) fn min(&self) -> usize {
        self.inner.get(1).map_or(0, |&i| i.get())
    }

    /// The position of the smallest leaf below child `c`.
    #[inline]
    pub(crate) fn leaf(&self, c: usize) -> usize {
        match self.inner.get(c) {
            Some(i) => i.get(),
            None => c - self.inner.len(),
        }
    }

    /// The smaller of the minima below children `a` and `b`.
    #[inline]
    pub(crate) fn smaller(&self, nodes: &[Node<I>], a: usize, b: usize) -> usize {
        let (a, b) = (self.leaf(a), self.leaf(b));
        let rank = |i: usize| nodes.get(i).map_or(NO_RANK, |node| node.pair);
        if (rank(b), b) < (rank(a), a) { b } else { a }
    }

    /// Restores the minima above leaf `pos`, whose rank changed.
    pub(crate) fn update(&mut self, nodes: &[Node<I>], pos: usize) {
        let mut k = (pos + self.inner.len()) / 2;
        while k >= 1 {
            let min = self.smaller(nodes, 2 * k, 2 * k + 1);
            let old = self.inner[k].get();
            if min == old && min != pos {
                break; // this subtree's minimum, so every one above, is unchanged
            }
            self.inner[k] = I::new(min);
            k /= 2;
        }
    }
}
