//! A custom inbound policy: adds a header to the request the upstream receives. Its value
//! comes from the GREETING environment variable (`.env` or the process environment).

use specgate_runtime::prelude::*;

#[derive(Deserialize)]
pub struct Options {
    /// The header to set.
    pub header: String,
}

pub async fn default(mut request: Request, context: &mut Context, options: &Options, policy_name: &str) -> Result<Flow, Problem> {
    let greeting = environment("GREETING").unwrap_or_else(|| "hello".to_owned());
    context.log.info(format!("{policy_name}: {} = {greeting}", options.header));
    request.set_header(&options.header, &greeting)?;
    Ok(request.into())
}
