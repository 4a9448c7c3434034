//! `member list`. (The other member commands come with the membership work.)

use crate::cli::parse::Invocation;
use crate::client::deadline_after;
use crate::error::{CtlError, CtlResult};
use crate::global;

pub async fn member_list(inv: &mut Invocation<'_>) -> CtlResult {
    let deadline = deadline_after(global::command_timeout(&inv.flags));
    let (client, printer) = global::must_client(&mut inv.flags).await?;
    let resp = client
        .member_list(deadline)
        .await
        .map_err(|e| CtlError::error(e.to_string()))?;
    printer.member_list(&mut std::io::stdout().lock(), &resp)
}
