//! ApiVersions, DescribeCluster and InitProducerId.

use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::{
    ApiVersionsRequest, ApiVersionsResponse, BrokerId, DescribeClusterRequest,
    DescribeClusterResponse, InitProducerIdRequest, InitProducerIdResponse, ProducerId,
};
use kafka_protocol::ResponseError;

use crate::apis;
use crate::broker::{sb, Broker};

impl Broker {
    pub(crate) fn api_versions(&self, _r: ApiVersionsRequest, _v: i16) -> ApiVersionsResponse {
        ApiVersionsResponse::default().with_api_keys(apis::advertised())
    }

    pub(crate) fn describe_cluster(
        &self,
        r: DescribeClusterRequest,
        version: i16,
    ) -> DescribeClusterResponse {
        let (host, port) = self.advertised();
        DescribeClusterResponse::default()
            .with_endpoint_type(if version >= 1 { r.endpoint_type } else { 1 })
            .with_cluster_id(sb(self.cluster_id.clone()))
            .with_controller_id(BrokerId(self.config.node_id))
            .with_cluster_authorized_operations(i32::MIN)
            .with_brokers(vec![DescribeClusterBroker::default()
                .with_broker_id(BrokerId(self.config.node_id))
                .with_host(sb(host))
                .with_port(port)])
    }

    pub(crate) fn init_producer_id(&self, r: InitProducerIdRequest) -> InitProducerIdResponse {
        let resp = InitProducerIdResponse::default()
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1);
        if r.transactional_id.is_some() {
            // Transactions are not implemented yet; say so rather than pretend.
            return resp.with_error_code(ResponseError::UnsupportedVersion.code());
        }
        // KIP-360: a producer that already has an id asks for an epoch bump after an error.
        if r.producer_id.0 >= 0 && r.producer_epoch >= 0 && r.producer_epoch < i16::MAX - 1 {
            return resp
                .with_producer_id(r.producer_id)
                .with_producer_epoch(r.producer_epoch + 1);
        }
        match self.allocate_producer_id() {
            Ok(id) => resp.with_producer_id(ProducerId(id)).with_producer_epoch(0),
            Err(e) => {
                tracing::error!("allocating a producer id failed: {e}");
                resp.with_error_code(ResponseError::KafkaStorageError.code())
            }
        }
    }
}
