//! Rule predicates compiled once into DataFusion physical expressions and evaluated
//! per record batch: no rule text is interpreted per event on the hot path.
//!
//! Besides the cause, effect and follow-up predicates, a rule may carry join
//! expressions (text) and a `rises` value (number) and series (text); they are
//! compiled the same way and evaluated only over batches, then read per row by the
//! correlator through [`RuleValues`].

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, BooleanArray, Float64Array, RecordBatch, StringArray};
use arrow::compute::cast;
use arrow::datatypes::DataType;
use causeway_rules::{Join, Matches, RulePack, RuleValues, Side};
use datafusion::common::DFSchema;
use datafusion::logical_expr::simplify::SimplifyContext;
use datafusion::optimizer::simplify_expressions::ExprSimplifier;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::prelude::SessionContext;

use crate::schema::EVENTS;
use crate::{Error, Result};

type Expr = Arc<dyn PhysicalExpr>;

#[derive(Debug)]
struct CompiledRule {
    cause: Expr,
    effect: Option<Expr>,
    follow: Option<Expr>,
    join: Option<(Expr, Expr)>,
    rise: Option<(Expr, Option<Expr>)>,
}

/// Every rule of a pack, compiled against the `events` schema.
#[derive(Debug)]
pub struct CompiledRules {
    rules: Vec<CompiledRule>,
    alertname: Expr,
}

/// What a batch evaluated to: rule matches per row, and the per-rule values.
#[derive(Debug)]
pub struct Evaluated {
    pub matches: Vec<Matches>,
    /// `attributes['alertname']` per row.
    pub alertname: StringArray,
    joins: Vec<Option<(StringArray, StringArray)>>,
    rises: Vec<Option<(Float64Array, Option<StringArray>)>>,
}

fn text_at(a: &StringArray, row: usize) -> Option<&str> {
    (row < a.len() && a.is_valid(row)).then(|| a.value(row))
}

impl RuleValues for Evaluated {
    fn join_key(&self, row: usize, rule: usize, side: Side) -> Option<&str> {
        let (cause, effect) = self.joins.get(rule)?.as_ref()?;
        match side {
            Side::Cause => text_at(cause, row),
            Side::Effect => text_at(effect, row),
        }
    }

    fn rise(&self, row: usize, rule: usize) -> Option<(f64, Option<&str>)> {
        let (values, series) = self.rises.get(rule)?.as_ref()?;
        if row >= values.len() || values.is_null(row) {
            return None;
        }
        let series = series.as_ref().and_then(|s| text_at(s, row));
        Some((values.value(row), series))
    }
}

impl Evaluated {
    /// `attributes['alertname']` of row `row`.
    pub fn alertname(&self, row: usize) -> Option<&str> {
        text_at(&self.alertname, row)
    }
}

impl CompiledRules {
    /// Compiles every expression against the `events` schema; errors name the rule
    /// and the field.
    pub fn compile(pack: &RulePack) -> Result<CompiledRules> {
        let ctx = SessionContext::new();
        let df_schema = DFSchema::try_from(EVENTS.as_ref().clone())
            .map_err(|e| Error::Internal(e.to_string()))?;
        // Functions like COALESCE only have a physical form once simplified (into
        // CASE), as the query planner would; no query start time is given, so
        // `now()` is not folded into a constant: rules have no wall clock.
        let simplifier = ExprSimplifier::new(
            SimplifyContext::builder()
                .with_schema(Arc::new(df_schema.clone()))
                .build(),
        );
        let compile = |rule_id: &str, field: &str, sql: &str, want: Want| -> Result<Expr> {
            let err = |reason: String| Error::InvalidPredicate {
                rule_id: rule_id.to_owned(),
                field: field.to_owned(),
                reason,
            };
            let expr = ctx
                .parse_sql_expr(sql, &df_schema)
                .and_then(|e| simplifier.coerce(e, &df_schema))
                .and_then(|e| simplifier.simplify(e))
                .map_err(|e| err(e.to_string()))?;
            let phys = ctx
                .create_physical_expr(expr, &df_schema)
                .map_err(|e| err(e.to_string()))?;
            let ty = phys
                .data_type(EVENTS.as_ref())
                .map_err(|e| err(e.to_string()))?;
            let ok = match want {
                Want::Boolean => ty == DataType::Boolean,
                Want::Text => matches!(
                    ty,
                    DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View | DataType::Null
                ),
                Want::Number => ty.is_numeric() || ty == DataType::Null,
            };
            if !ok {
                return Err(err(format!("must be {}, is {ty}", want.describe())));
            }
            Ok(phys)
        };
        let mut rules = Vec::with_capacity(pack.rules().len());
        for rule in pack.rules() {
            let id = rule.id.as_str();
            let effect = rule
                .effect
                .as_ref()
                .map(|e| compile(id, "effect.where", &e.predicate, Want::Boolean))
                .transpose()?;
            let follow = rule
                .not_followed_by
                .as_ref()
                .map(|a| compile(id, "not_followed_by.where", &a.predicate, Want::Boolean))
                .transpose()?;
            let join = match &rule.join {
                Join::Expr { cause, effect } => Some((
                    compile(id, "join.cause", cause, Want::Text)?,
                    compile(id, "join.effect", effect, Want::Text)?,
                )),
                _ => None,
            };
            let rise = match rule.effect.as_ref().and_then(|e| e.rises.as_ref()) {
                Some(r) => Some((
                    compile(id, "effect.rises.value", &r.value, Want::Number)?,
                    r.series
                        .as_ref()
                        .map(|s| compile(id, "effect.rises.series", s, Want::Text))
                        .transpose()?,
                )),
                None => None,
            };
            rules.push(CompiledRule {
                cause: compile(id, "cause.where", &rule.cause.predicate, Want::Boolean)?,
                effect,
                follow,
                join,
                rise,
            });
        }
        let alertname = compile("-", "alertname", "attributes['alertname']", Want::Text)?;
        Ok(CompiledRules { rules, alertname })
    }

    /// Evaluates every rule over an `events` batch.
    pub fn evaluate(&self, batch: &RecordBatch) -> Result<Evaluated> {
        let n = batch.num_rows();
        let mut matches = vec![Matches::default(); n];
        let mut joins = Vec::with_capacity(self.rules.len());
        let mut rises = Vec::with_capacity(self.rules.len());
        for (i, rule) in self.rules.iter().enumerate() {
            let bit = 1u64 << i;
            set_bits(&eval_bool(&rule.cause, batch)?, bit, &mut matches, |m| {
                &mut m.cause
            });
            if let Some(e) = &rule.effect {
                set_bits(&eval_bool(e, batch)?, bit, &mut matches, |m| &mut m.effect);
            }
            if let Some(f) = &rule.follow {
                set_bits(&eval_bool(f, batch)?, bit, &mut matches, |m| &mut m.follow);
            }
            joins.push(match &rule.join {
                Some((c, e)) => Some((eval_text(c, batch)?, eval_text(e, batch)?)),
                None => None,
            });
            rises.push(match &rule.rise {
                Some((v, s)) => Some((
                    eval_number(v, batch)?,
                    s.as_ref().map(|s| eval_text(s, batch)).transpose()?,
                )),
                None => None,
            });
        }
        Ok(Evaluated {
            matches,
            alertname: eval_text(&self.alertname, batch)?,
            joins,
            rises,
        })
    }
}

#[derive(Debug, Clone, Copy)]
enum Want {
    Boolean,
    Text,
    Number,
}

impl Want {
    fn describe(self) -> &'static str {
        match self {
            Want::Boolean => "a boolean expression",
            Want::Text => "a text expression",
            Want::Number => "a numeric expression",
        }
    }
}

fn set_bits(
    values: &BooleanArray,
    bit: u64,
    matches: &mut [Matches],
    field: impl Fn(&mut Matches) -> &mut u64,
) {
    if values.true_count() == 0 {
        return;
    }
    for (row, m) in matches.iter_mut().enumerate() {
        if values.is_valid(row) && values.value(row) {
            *field(m) |= bit;
        }
    }
}

fn eval(expr: &Expr, batch: &RecordBatch) -> Result<ArrayRef> {
    expr.evaluate(batch)
        .and_then(|v| v.into_array(batch.num_rows()))
        .map_err(|e| Error::Internal(e.to_string()))
}

fn eval_bool(expr: &Expr, batch: &RecordBatch) -> Result<BooleanArray> {
    eval(expr, batch)?
        .as_any()
        .downcast_ref::<BooleanArray>()
        .cloned()
        .ok_or_else(|| Error::Internal("predicate did not return booleans".into()))
}

fn eval_text(expr: &Expr, batch: &RecordBatch) -> Result<StringArray> {
    let array = cast(&eval(expr, batch)?, &DataType::Utf8)?;
    array
        .as_any()
        .downcast_ref::<StringArray>()
        .cloned()
        .ok_or_else(|| Error::Internal("text expression did not return text".into()))
}

fn eval_number(expr: &Expr, batch: &RecordBatch) -> Result<Float64Array> {
    let array = cast(&eval(expr, batch)?, &DataType::Float64)?;
    array
        .as_any()
        .downcast_ref::<Float64Array>()
        .cloned()
        .ok_or_else(|| Error::Internal("numeric expression did not return numbers".into()))
}
