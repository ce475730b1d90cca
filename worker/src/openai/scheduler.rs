//! Which sequences run in the next engine iteration, and whose KV blocks they use.
//!
//! Policy (vLLM's, without priorities):
//! * **Admission, first come first served.** A waiting sequence is admitted only when its
//!   blocks fit: those for every token it has (prompt, plus the output so far for a preempted
//!   one) and one more, after keeping back one block for every running sequence about to cross a
//!   block boundary (so an admission never forces a preemption at the very next step). The queue
//!   head blocks those behind it: no overtaking, so a long prompt is not starved by short ones.
//!   At most `max_num_seqs` sequences run.
//! * **Growth.** A decoding sequence takes one more block when its next position starts one.
//! * **Preemption by recompute.** When no block is free, the newest running sequence (the last
//!   admitted by arrival order) loses all its blocks and goes back to the head of the queue with
//!   its tokens so far; on readmission its prompt + output is prefilled again and generation
//!   continues where it stopped (greedy output is unchanged). The oldest sequences always make
//!   progress, and a sequence whose whole length fits the pool alone always finishes, so the
//!   system cannot livelock (requests longer than the pool are refused at the door).

use super::request::{Event, FinishReason, SeqParams};
use super::kv_blocks::{blocks_for, BlockAllocator};
use rand::rngs::StdRng;
use std::collections::VecDeque;
use tokio::sync::mpsc::UnboundedSender;

/// One request's state in the engine.
pub struct Sequence {
    /// Arrival order (FCFS and the preemption victim order).
    pub id: u64,
    pub prompt_len: usize,
    /// Prompt then generated tokens.
    pub tokens: Vec<u32>,
    /// Positions whose keys/values are in `blocks` (prefill progress, then context length).
    pub computed: usize,
    /// Block table: block `i` holds positions `i * block_size ..`.
    pub blocks: Vec<u32>,
    /// Admitted and not yet through its prompt (+ output so far, after a preemption).
    pub prefilling: bool,
    pub params: SeqParams,
    pub rng: Option<StdRng>,
    pub events: UnboundedSender<Event>,
    pub finished: Option<FinishReason>,
    /// The client went away (its receiver was dropped).
    pub cancelled: bool,
    pub preemptions: u32,
}

impl Sequence {
    pub fn generated(&self) -> usize {
        self.tokens.len() - self.prompt_len
    }
    /// Sends `event`; marks the sequence cancelled when nobody listens any more.
    pub fn emit(&mut self, event: Event) {
        if self.events.send(event).is_err() {
            self.cancelled = true;
        }
    }
    pub fn is_done(&self) -> bool {
        self.finished.is_some() || self.cancelled
    }
}

pub struct Scheduler {
    pub waiting: VecDeque<Sequence>,
    /// Admission order, re-sorted by arrival so the newest is last.
    pub running: Vec<Sequence>,
    pub alloc: BlockAllocator,
    pub block_size: usize,
    pub max_num_seqs: usize,
    pub preemptions_total: u64,
}

impl Scheduler {
    pub fn new(num_blocks: usize, block_size: usize, max_num_seqs: usize) -> Scheduler {
        Scheduler {
            waiting: VecDeque::new(),
            running: Vec::new(),
            alloc: BlockAllocator::new(num_blocks),
            block_size,
            max_num_seqs: max_num_seqs.max(1),
            preemptions_total: 0,
        }
    }

    /// Queues `seq` in arrival order (a preempted sequence goes back before newer ones).
    pub fn enqueue(&mut self, seq: Sequence) {
        let at = self.waiting.iter().position(|s| s.id > seq.id).unwrap_or(self.waiting.len());
        self.waiting.insert(at, seq);
    }

    /// Whether a running sequence's next decode step needs a new block.
    fn needs_block(&self, s: &Sequence) -> bool {
        !s.prefilling && !s.is_done() && s.computed / self.block_size >= s.blocks.len()
    }

    /// Admits waiting sequences, first come first served, while their blocks fit.
    pub fn admit(&mut self) {
        let reserve = self.running.iter().filter(|s| self.needs_block(s)).count();
        while let Some(front) = self.waiting.front() {
            if self.running.len() >= self.max_num_seqs {
                break;
            }
            let need = blocks_for(front.tokens.len() + 1, self.block_size);
            if self.alloc.free_count() < need + reserve {
                break;
            }
            let mut seq = self.waiting.pop_front().expect("front exists");
            seq.blocks = self.alloc.allocate_n(need).expect("checked free blocks");
            seq.computed = 0;
            seq.prefilling = true;
            self.running.push(seq);
        }
        self.running.sort_by_key(|s| s.id);
    }

    /// Gives every decoding sequence the block its next position needs, preempting the newest
    /// running sequences (possibly the one in need itself) when none is free.
    pub fn reserve_decode_blocks(&mut self) {
        let mut i = 0;
        while i < self.running.len() {
            if self.needs_block(&self.running[i]) {
                loop {
                    if let Some(b) = self.alloc.allocate() {
                        self.running[i].blocks.push(b);
                        break;
                    }
                    let victim = self.running.len() - 1;
                    self.preempt(victim);
                    if victim == i {
                        break;
                    }
                }
            }
            i += 1;
        }
    }

    /// Frees `running[index]`'s blocks and queues it again for recomputation.
    pub fn preempt(&mut self, index: usize) {
        let mut seq = self.running.remove(index);
        tracing::debug!(seq = seq.id, tokens = seq.tokens.len(), "preempted (recompute)");
        self.alloc.release(&mut seq.blocks);
        seq.computed = 0;
        seq.prefilling = true;
        seq.preemptions += 1;
        self.preemptions_total += 1;
        self.enqueue(seq);
    }

    /// Takes out the finished and cancelled sequences (running and waiting), freeing their blocks.
    pub fn take_done(&mut self) -> Vec<Sequence> {
        let mut done = Vec::new();
        let mut i = 0;
        while i < self.running.len() {
            if self.running[i].is_done() {
                let mut s = self.running.remove(i);
                self.alloc.release(&mut s.blocks);
                done.push(s);
            } else {
                i += 1;
            }
        }
        let mut kept = VecDeque::with_capacity(self.waiting.len());
        for s in self.waiting.drain(..) {
            if s.is_done() {
                done.push(s);
            } else {
                kept.push_back(s);
            }
        }
        self.waiting = kept;
        done
    }

    pub fn is_idle(&self) -> bool {
        self.waiting.is_empty() && self.running.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::openai::request::SamplingParams;

    fn seq(id: u64, prompt: usize, max_tokens: usize) -> (Sequence, tokio::sync::mpsc::UnboundedReceiver<Event>) {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let s = Sequence {
            id,
            prompt_len: prompt,
            tokens: vec![1; prompt],
            computed: 0,
            blocks: Vec::new(),
            prefilling: false,
            params: SeqParams { max_tokens, min_tokens: 0, ignore_eos: true, sampling: SamplingParams::default() },
            rng: None,
            events: tx,
            finished: None,
            cancelled: false,
            preemptions: 0,
        };
        (s, rx)
    }

    /// Marks every running sequence as prefilled and decoding.
    fn prefill_all(s: &mut Scheduler) {
        for q in &mut s.running {
            q.computed = q.tokens.len();
            q.tokens.push(7);
            q.prefilling = false;
        }
    }

    #[test]
    fn admits_first_come_first_served_while_blocks_fit() {
        let mut s = Scheduler::new(4, 4, 8);
        let mut rxs = Vec::new();
        for (id, len) in [(0, 6), (1, 9), (2, 1)] {
            let (q, rx) = seq(id, len, 4);
            rxs.push(rx);
            s.enqueue(q);
        }
        s.admit();
        // 0 takes blocks_for(7) = 2; 1 needs blocks_for(10) = 3 > 2 free and blocks 2 behind it.
        assert_eq!(s.running.iter().map(|q| q.id).collect::<Vec<_>>(), vec![0]);
        assert_eq!(s.alloc.free_count(), 2);
        assert_eq!(s.waiting.len(), 2);
    }

    #[test]
    fn preempts_the_newest_when_a_block_runs_out_and_resumes_it_later() {
        let mut s = Scheduler::new(4, 2, 8);
        let mut rxs = Vec::new();
        for id in 0..2 {
            let (q, rx) = seq(id, 2, 10);
            rxs.push(rx);
            s.enqueue(q);
        }
        s.admit();
        assert_eq!(s.running.len(), 2, "each takes blocks_for(3) = 2 blocks");
        prefill_all(&mut s);
        // Admission reserved the first decode position; pretend both decoded up to position 4,
        // the start of their third block, with the pool empty: 1 is preempted, 0 grows.
        for q in &mut s.running {
            q.tokens.extend([8, 9]);
            q.computed = 4;
        }
        s.reserve_decode_blocks();
        assert_eq!(s.running.iter().map(|q| q.id).collect::<Vec<_>>(), vec![0]);
        assert_eq!(s.running[0].blocks.len(), 3);
        assert_eq!(s.waiting.front().map(|q| (q.id, q.tokens.len(), q.preemptions)), Some((1, 5, 1)));
        assert_eq!(s.preemptions_total, 1);
        // 0 finishes: its blocks come back and 1 is readmitted with its output so far.
        s.running[0].finished = Some(FinishReason::Length);
        let done = s.take_done();
        assert_eq!(done.len(), 1);
        assert_eq!(s.alloc.free_count(), 4);
        s.admit();
        assert_eq!(s.running.len(), 1);
        assert_eq!((s.running[0].id, s.running[0].blocks.len(), s.running[0].prefilling), (1, 3, true));
    }

    #[test]
    fn a_lone_sequence_that_needs_a_block_preempts_itself_only_when_nothing_else_runs() {
        let mut s = Scheduler::new(1, 2, 8);
        let (q, _rx) = seq(0, 1, 5);
        s.enqueue(q);
        s.admit();
        prefill_all(&mut s);
        s.running[0].tokens.push(8);
        s.running[0].computed = 2; // position 2 needs a second block, the pool has one
        s.reserve_decode_blocks();
        assert!(s.running.is_empty());
        assert_eq!(s.waiting.len(), 1);
    }
}
