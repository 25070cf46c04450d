//! specgate: generates a compiled axum API gateway from a Zuplo-style project.
//!
//! Pipeline: [`project::load`] reads the folder into the [`model`] (with positions for
//! [`diag`]nostics), [`emit`] turns the model into Rust token streams, [`generate`] assembles
//! the crate's files and checks a directory for drift; [`federation`] does the same for a build
//! of several projects in one crate.

pub mod catalog;
pub mod dev;
pub mod diag;
pub mod echo;
pub mod emit;
pub mod federation;
pub mod generate;
pub mod import;
pub mod inspect;
pub mod keys_cli;
pub mod model;
pub mod modules;
pub mod pattern;
pub mod policies;
pub mod porting;
pub mod project;
pub mod reference;
pub mod scaffold;
pub mod schema;
pub mod source;
pub mod template;
