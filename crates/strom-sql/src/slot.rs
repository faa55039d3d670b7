//! Slots: the leaves of a continuous query's physical plan.
//!
//! A continuous query is planned once by DataFusion, like a batch query, over tables whose scans
//! are [`SlotExec`]s. Each micro-batch puts the new records in the slots and executes the plan
//! again: stateless operators (filters, projections, scalar functions, hash joins against a
//! table's current rows) run unchanged, and the state between batches lives in Strom's own
//! operators, outside the plan.

use std::fmt;
use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use datafusion::catalog::Session;
use datafusion::datasource::{TableProvider, TableType};
use datafusion::error::Result as DfResult;
use datafusion::execution::TaskContext;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_expr::EquivalenceProperties;
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties,
    SendableRecordBatchStream,
};
use parking_lot::Mutex;

use crate::window::WindowSpec;

/// What a slot is fed from.
#[derive(Debug, Clone)]
pub struct Binding {
    /// The stream or table.
    pub source: String,
    /// Whether the source is a table (the slot holds its current rows, not new records).
    pub table: bool,
    /// The window function applied to it, if any.
    pub window: Option<WindowSpec>,
}

/// Batches a plan leaf returns the next time the plan runs.
#[derive(Debug)]
pub struct Slot {
    /// The schema of the batches.
    pub schema: SchemaRef,
    /// Where its rows come from.
    pub binding: Binding,
    batches: Mutex<Vec<RecordBatch>>,
}

impl Slot {
    /// An empty slot.
    pub fn new(schema: SchemaRef, binding: Binding) -> Arc<Slot> {
        Arc::new(Slot {
            schema,
            binding,
            batches: Mutex::new(Vec::new()),
        })
    }

    /// Replaces the slot's contents.
    pub fn set(&self, batches: Vec<RecordBatch>) {
        *self.batches.lock() = batches;
    }

    fn get(&self) -> Vec<RecordBatch> {
        self.batches.lock().clone()
    }
}

/// A table whose scan is a [`SlotExec`] over one slot.
#[derive(Debug)]
pub struct SlotTable {
    slot: Arc<Slot>,
    /// Every slot scanned while planning, so the query knows its inputs.
    used: Arc<Mutex<Vec<Arc<Slot>>>>,
}

impl SlotTable {
    /// A table over `slot`; scans record the slot in `used`.
    pub fn new(slot: Arc<Slot>, used: Arc<Mutex<Vec<Arc<Slot>>>>) -> Self {
        SlotTable { slot, used }
    }
}

#[async_trait::async_trait]
impl TableProvider for SlotTable {
    fn schema(&self) -> SchemaRef {
        self.slot.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        {
            let mut used = self.used.lock();
            if !used.iter().any(|s| Arc::ptr_eq(s, &self.slot)) {
                used.push(self.slot.clone());
            }
        }
        Ok(Arc::new(SlotExec::new(
            self.slot.clone(),
            projection.cloned(),
        )))
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> DfResult<Vec<TableProviderFilterPushDown>> {
        Ok(vec![
            TableProviderFilterPushDown::Unsupported;
            filters.len()
        ])
    }
}

/// A plan leaf returning whatever its slot holds.
#[derive(Debug)]
pub struct SlotExec {
    slot: Arc<Slot>,
    projection: Option<Vec<usize>>,
    schema: SchemaRef,
    props: Arc<PlanProperties>,
}

impl SlotExec {
    /// A leaf over `slot`, projected.
    pub fn new(slot: Arc<Slot>, projection: Option<Vec<usize>>) -> Self {
        let schema = match &projection {
            Some(p) => Arc::new(
                slot.schema
                    .project(p)
                    .unwrap_or_else(|_| (*slot.schema).clone()),
            ),
            None => slot.schema.clone(),
        };
        let props = Arc::new(PlanProperties::new(
            EquivalenceProperties::new(schema.clone()),
            Partitioning::UnknownPartitioning(1),
            EmissionType::Incremental,
            Boundedness::Bounded,
        ));
        SlotExec {
            slot,
            projection,
            schema,
            props,
        }
    }

    /// The slot it reads.
    pub fn slot(&self) -> &Arc<Slot> {
        &self.slot
    }

    /// The slot's columns it returns (all if `None`).
    pub fn projection(&self) -> Option<&[usize]> {
        self.projection.as_deref()
    }
}

impl DisplayAs for SlotExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SlotExec: {}", self.slot.binding.source)
    }
}

impl ExecutionPlan for SlotExec {
    fn name(&self) -> &str {
        "SlotExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.props
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        Vec::new()
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(
            &Arc<dyn datafusion::physical_plan::PhysicalExpr>,
        ) -> DfResult<datafusion::common::tree_node::TreeNodeRecursion>,
    ) -> DfResult<datafusion::common::tree_node::TreeNodeRecursion> {
        Ok(datafusion::common::tree_node::TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        _children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        Ok(self)
    }

    fn execute(
        &self,
        _partition: usize,
        _context: Arc<TaskContext>,
    ) -> DfResult<SendableRecordBatchStream> {
        let batches = self.slot.get();
        let projected: Vec<DfResult<RecordBatch>> = batches
            .into_iter()
            .map(|b| match &self.projection {
                Some(p) => b.project(p).map_err(Into::into),
                None => Ok(b),
            })
            .collect();
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            self.schema.clone(),
            futures_util::stream::iter(projected),
        )))
    }
}
