//! What the agent's tests share: a client that carries the agent's token.

use heisen_proto::agent_client::AgentClient;
use tonic::metadata::MetadataValue;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

/// Puts `authorization: Bearer TOKEN` on every call.
#[derive(Clone)]
pub struct Bearer(MetadataValue<tonic::metadata::Ascii>);

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        req.metadata_mut().insert("authorization", self.0.clone());
        Ok(req)
    }
}

pub type Client = AgentClient<InterceptedService<Channel, Bearer>>;

/// A client of the agent at `addr` (host:port) with the token in `token_file` (an agent started
/// without --token-file makes DATA/token).
pub async fn connect(addr: &str, token_file: &std::path::Path) -> Client {
    let token = std::fs::read_to_string(token_file).unwrap_or_else(|e| panic!("{}: {e}", token_file.display()));
    let value = format!("Bearer {}", token.trim()).parse().expect("a token is ASCII");
    let channel = Channel::from_shared(format!("http://{addr}")).unwrap().connect().await.unwrap();
    AgentClient::with_interceptor(channel, Bearer(value))
}
