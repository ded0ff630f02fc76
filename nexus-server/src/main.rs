//! NexusAI Hub reference server (being written).
fn main() {}
