//! Rule predicates compiled once into DataFusion physical expressions and evaluated
//! per record batch: no rule text is interpreted per event on the hot path.

use std::sync::Arc;

use arrow::array::{Array, BooleanArray, RecordBatch};
use arrow::datatypes::DataType;
use causeway_rules::{Matches, RulePack};
use datafusion::common::DFSchema;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::prelude::SessionContext;

use crate::schema::EVENTS;
use crate::{Error, Result};

/// The compiled cause and effect predicates of every rule in a pack.
#[derive(Debug)]
pub struct CompiledRules {
    rules: Vec<(Arc<dyn PhysicalExpr>, Arc<dyn PhysicalExpr>)>,
}

impl CompiledRules {
    /// Compiles every predicate against the `events` schema; errors name the rule
    /// and the field.
    pub fn compile(pack: &RulePack) -> Result<CompiledRules> {
        let ctx = SessionContext::new();
        let df_schema = DFSchema::try_from(EVENTS.as_ref().clone())
            .map_err(|e| Error::Internal(e.to_string()))?;
        let mut rules = Vec::with_capacity(pack.rules().len());
        for rule in pack.rules() {
            let compile = |field: &str, sql: &str| -> Result<Arc<dyn PhysicalExpr>> {
                let err = |reason: String| Error::InvalidPredicate {
                    rule_id: rule.id.clone(),
                    field: field.to_owned(),
                    reason,
                };
                let expr = ctx
                    .parse_sql_expr(sql, &df_schema)
                    .map_err(|e| err(e.to_string()))?;
                let phys = ctx
                    .create_physical_expr(expr, &df_schema)
                    .map_err(|e| err(e.to_string()))?;
                let ty = phys
                    .data_type(EVENTS.as_ref())
                    .map_err(|e| err(e.to_string()))?;
                if ty != DataType::Boolean {
                    return Err(err(format!("must be a boolean expression, is {ty}")));
                }
                Ok(phys)
            };
            rules.push((
                compile("cause.where", &rule.cause.predicate)?,
                compile("effect.where", &rule.effect.predicate)?,
            ));
        }
        Ok(CompiledRules { rules })
    }

    /// The rules each row of an `events` batch matches.
    pub fn evaluate(&self, batch: &RecordBatch) -> Result<Vec<Matches>> {
        let n = batch.num_rows();
        let mut out = vec![Matches::default(); n];
        for (i, (cause, effect)) in self.rules.iter().enumerate() {
            let bit = 1u64 << i;
            let c = eval(cause, batch)?;
            let e = eval(effect, batch)?;
            for (row, m) in out.iter_mut().enumerate() {
                if c.is_valid(row) && c.value(row) {
                    m.cause |= bit;
                }
                if e.is_valid(row) && e.value(row) {
                    m.effect |= bit;
                }
            }
        }
        Ok(out)
    }
}

fn eval(expr: &Arc<dyn PhysicalExpr>, batch: &RecordBatch) -> Result<BooleanArray> {
    let value = expr
        .evaluate(batch)
        .and_then(|v| v.into_array(batch.num_rows()))
        .map_err(|e| Error::Internal(e.to_string()))?;
    value
        .as_any()
        .downcast_ref::<BooleanArray>()
        .cloned()
        .ok_or_else(|| Error::Internal("predicate did not return booleans".into()))
}
