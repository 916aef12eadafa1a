//! The pipeline layer as the service uses it: the spec (`cep_pipeline::spec`) and running
//! pipelines (`cep_pipeline::running`).

pub use cep_pipeline::running::*;
pub use cep_pipeline::spec::*;
