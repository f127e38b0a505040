//! Client adapters: a typed handle through which a monolith's own code reaches a
//! capability, whose implementation (local module or remote client) can be swapped live.
