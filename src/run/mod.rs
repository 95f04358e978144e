//! Running the pipeline: [`single`] for one archive (check the paths,
//! open the view, plan, hand the edits to the sink, report), [`batch`]
//! for whole trees (walk, shard, journal, the run report), and [`worker`]
//! for the child processes that isolate each archive.

pub mod batch;
pub mod single;
pub mod worker;
