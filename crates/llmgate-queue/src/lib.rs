//! PriorityQueueLayer: a priority admission queue with deadlines, shedding and per-client fairness
