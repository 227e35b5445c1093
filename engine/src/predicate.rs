//! Rule predicates compiled once into DataFusion physical expressions and evaluated
//! per record batch: no rule text is interpreted per event on the hot path.
//!
//! Besides the cause, effect and follow-up predicates, a rule may carry join
//! expressions (text) and a `rises` value (number) and series (text); they are
//! compiled the same way, evaluated only on the rows of the rule's side, and read
//! per row by the correlator through [`RuleValues`].
//!
//! Rules share sub-expressions (every "a change can cause this alert" predicate is
//! the same, `attributes['alertname']` is everywhere): after compiling, each
//! sub-expression that occurs more than once across the pack is evaluated once per
//! batch into an extra column, and the expressions read that column instead
//! (common sub-expression elimination over the whole pack). Every expression then
//! reads a batch of only the columns it names (see `Narrow`), and the attribute
//! reads are made in one pass over the map column (see `SharedColumn`).

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, BooleanArray, Float64Array, MapArray, RecordBatch, RecordBatchOptions,
    StringArray, StringBuilder, new_null_array,
};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use causeway_rules::{Join, Matches, RulePack, RuleValues, Side};
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{DFSchema, ScalarValue};
use datafusion::logical_expr::simplify::SimplifyContext;
use datafusion::optimizer::simplify_expressions::ExprSimplifier;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::ScalarFunctionExpr;
use datafusion::physical_expr::expressions::{Column, Literal};
use datafusion::prelude::SessionContext;

use crate::schema::EVENTS;
use crate::{Error, Result};

type Expr = Arc<dyn PhysicalExpr>;

#[derive(Debug)]
struct CompiledRule<E = Expr> {
    cause: E,
    effect: Option<E>,
    follow: Option<E>,
    join: Option<(E, E)>,
    rise: Option<(E, Option<E>)>,
}

impl CompiledRule {
    fn map<F>(&self, mut f: impl FnMut(&Expr) -> Result<F>) -> Result<CompiledRule<F>> {
        Ok(CompiledRule {
            cause: f(&self.cause)?,
            effect: self.effect.as_ref().map(&mut f).transpose()?,
            follow: self.follow.as_ref().map(&mut f).transpose()?,
            join: match &self.join {
                Some((c, e)) => Some((f(c)?, f(e)?)),
                None => None,
            },
            rise: match &self.rise {
                Some((v, s)) => Some((f(v)?, s.as_ref().map(&mut f).transpose()?)),
                None => None,
            },
        })
    }
}

/// An expression rewritten to read only the columns it names, in a batch of just
/// those columns. DataFusion's `AND`/`OR` pre-select the rows the right side still
/// decides by filtering the whole input batch: over the events columns plus
/// every shared column that cost more than the predicates themselves.
#[derive(Debug)]
struct Narrow {
    expr: Expr,
    /// The columns it reads, as indices into the full (extended) batch.
    columns: Vec<usize>,
    schema: SchemaRef,
}

impl Narrow {
    /// `expr`, over `input`, narrowed to the columns it reads.
    fn new(expr: &Expr, input: &Schema) -> Result<Narrow> {
        let mut columns = Vec::new();
        expr.apply(|node| {
            if let Some(c) = node.downcast_ref::<Column>() {
                columns.push(c.index());
            }
            Ok(TreeNodeRecursion::Continue)
        })
        .map_err(internal)?;
        columns.sort_unstable();
        columns.dedup();
        let expr = Arc::clone(expr)
            .transform_up(|node| match node.downcast_ref::<Column>() {
                Some(c) => {
                    let at = columns.binary_search(&c.index()).map_err(|_| {
                        datafusion::error::DataFusionError::Internal(format!(
                            "column {} not collected",
                            c.index()
                        ))
                    })?;
                    Ok(Transformed::yes(Arc::new(Column::new(c.name(), at)) as Expr))
                }
                None => Ok(Transformed::no(node)),
            })
            .map_err(internal)?
            .data;
        let schema = Arc::new(input.project(&columns)?);
        Ok(Narrow {
            expr,
            columns,
            schema,
        })
    }

    /// The batch this expression reads: its columns of `all`.
    fn input(&self, all: &[ArrayRef], rows: usize) -> Result<RecordBatch> {
        let columns = self
            .columns
            .iter()
            .map(|&i| {
                all.get(i).cloned().ok_or_else(|| {
                    Error::Internal(format!("batch has no column {i} (of {})", all.len()))
                })
            })
            .collect::<Result<_>>()?;
        Ok(RecordBatch::try_new_with_options(
            Arc::clone(&self.schema),
            columns,
            &RecordBatchOptions::new().with_row_count(Some(rows)),
        )?)
    }
}

/// A shared column: an expression, or an attribute read (`attributes['key']`).
/// DataFusion's `get_field` compares every map entry with its key and copies the
/// matches through `MutableArrayData` one row at a time, for each key apart; the
/// attribute reads of a pack are made in one pass over the map instead.
#[derive(Debug)]
enum SharedColumn {
    Expr(Narrow),
    /// Read from the plan's attribute map column.
    Attribute {
        key: String,
    },
}

impl SharedColumn {
    /// `attributes`: the map column attribute reads use (the first one seen); a
    /// read of another map stays an expression.
    fn new(expr: &Expr, input: &Schema, attributes: &mut Option<usize>) -> Result<SharedColumn> {
        if let Some((map, key)) = attribute_read(expr, input)
            && *attributes.get_or_insert(map) == map
        {
            return Ok(SharedColumn::Attribute {
                key: key.to_owned(),
            });
        }
        Ok(SharedColumn::Expr(Narrow::new(expr, input)?))
    }
}

/// The map column and key of a text attribute read (`attributes['key']`).
fn attribute_read<'a>(expr: &'a Expr, input: &Schema) -> Option<(usize, &'a str)> {
    if let Some(f) = expr.downcast_ref::<ScalarFunctionExpr>()
        && f.name() == "get_field"
        && let [map, key] = f.args()
        && let Some(map) = map.downcast_ref::<Column>()
        && let Some(key) = key.downcast_ref::<Literal>()
        && let ScalarValue::Utf8(Some(key)) = key.value()
        && let DataType::Map(entries, _) = input.fields().get(map.index())?.data_type()
        && let DataType::Struct(kv) = entries.data_type()
        && kv.len() == 2
        && kv.iter().all(|f| f.data_type() == &DataType::Utf8)
        && expr.data_type(input).ok() == Some(DataType::Utf8)
    {
        return Some((map.index(), key));
    }
    None
}

/// The value of each of `keys` in every row of a `Map<Utf8, Utf8>` column (the
/// first entry with the key; NULL where there is none), in one pass.
fn attribute_columns(map: &ArrayRef, keys: &[&str]) -> Result<Vec<ArrayRef>> {
    let map = map
        .as_any()
        .downcast_ref::<MapArray>()
        .ok_or_else(|| Error::Internal("attributes are not a map".into()))?;
    let text = |a: &ArrayRef| {
        a.as_any()
            .downcast_ref::<StringArray>()
            .cloned()
            .ok_or_else(|| Error::Internal("attribute keys and values must be text".into()))
    };
    let (names, values) = (text(map.keys())?, text(map.values())?);
    // An entry's name is compared only with the keys as long as it (a pack reads
    // a dozen or more keys; most names in a row match none of them).
    let longest = keys.iter().map(|k| k.len()).max().unwrap_or(0);
    let mut by_len: Vec<Vec<(usize, &[u8])>> = vec![Vec::new(); longest + 1];
    for (k, key) in keys.iter().enumerate() {
        by_len[key.len()].push((k, key.as_bytes()));
    }
    // Per key (key-major), the entry holding its value in each row.
    const NONE: u32 = u32::MAX;
    let rows = map.len();
    if rows == 0 {
        return Ok(keys
            .iter()
            .map(|_| new_null_array(&DataType::Utf8, 0))
            .collect());
    }
    let mut at = vec![NONE; keys.len() * rows];
    let mut hits = vec![0usize; keys.len()];
    let offsets = map.value_offsets();
    for row in 0..rows {
        if map.is_null(row) {
            continue;
        }
        for entry in offsets[row] as usize..offsets[row + 1] as usize {
            let name = names.value(entry).as_bytes();
            let Some(same_length) = by_len.get(name.len()) else {
                continue;
            };
            if let Some(&(k, _)) = same_length.iter().find(|(_, key)| *key == name) {
                let slot = &mut at[k * rows + row];
                // The first entry with the key wins.
                if *slot == NONE {
                    *slot = u32::try_from(entry).map_err(|_| {
                        Error::Internal("attribute map larger than 4 G entries".into())
                    })?;
                    hits[k] += 1;
                }
            }
        }
    }
    Ok(at
        .chunks_exact(rows)
        .zip(&hits)
        .map(|(entries, &hits)| {
            if hits == 0 {
                return new_null_array(&DataType::Utf8, rows);
            }
            let mut b = StringBuilder::with_capacity(rows, hits * 16);
            for &entry in entries {
                match entry {
                    NONE => b.append_null(),
                    e if values.is_valid(e as usize) => b.append_value(values.value(e as usize)),
                    _ => b.append_null(),
                }
            }
            Arc::new(b.finish()) as ArrayRef
        })
        .collect())
}

/// What `evaluate` runs: every expression narrowed to its columns.
#[derive(Debug)]
struct Plan {
    rules: Vec<CompiledRule<Narrow>>,
    alertname: Narrow,
    /// Each shared column, over the columns before its own.
    shared: Vec<SharedColumn>,
    /// The map column of the attribute reads among `shared`, and their keys in order.
    attributes: Option<(usize, Vec<String>)>,
}

impl Plan {
    /// `shared`: each shared expression with the schema it reads; `full`: the
    /// schema with all of them, which the rules read.
    fn new(
        rules: &[CompiledRule],
        alertname: &Expr,
        shared: &[(&Expr, &Schema)],
        full: &Schema,
    ) -> Result<Plan> {
        let mut map = None;
        let shared: Vec<SharedColumn> = shared
            .iter()
            .map(|(e, schema)| SharedColumn::new(e, schema, &mut map))
            .collect::<Result<_>>()?;
        let keys = shared
            .iter()
            .filter_map(|c| match c {
                SharedColumn::Attribute { key, .. } => Some(key.clone()),
                SharedColumn::Expr(_) => None,
            })
            .collect();
        Ok(Plan {
            rules: rules
                .iter()
                .map(|r| r.map(|e| Narrow::new(e, full)))
                .collect::<Result<_>>()?,
            alertname: Narrow::new(alertname, full)?,
            shared,
            attributes: map.map(|m| (m, keys)),
        })
    }
}

/// Every rule of a pack, compiled against the `events` schema.
#[derive(Debug)]
pub struct CompiledRules {
    rules: Vec<CompiledRule>,
    alertname: Expr,
    /// Shared sub-expressions, in evaluation order (each may read earlier ones).
    shared: Vec<Expr>,
    /// `events` plus the columns of the first `k` shared sub-expressions, for
    /// every `k` (the last is the schema the rule expressions read).
    extended: Vec<SchemaRef>,
    plan: Plan,
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
        let mut compiled = CompiledRules::compile_unshared(pack)?;
        compiled.share_common_subexpressions()?;
        compiled.plan = compiled.plan()?;
        Ok(compiled)
    }

    /// Every expression compiled on its own.
    fn compile_unshared(pack: &RulePack) -> Result<CompiledRules> {
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
                .and_then(|e| crate::text_in_list::rewrite(e, EVENTS.as_ref()))
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
        let plan = Plan::new(&rules, &alertname, &[], &EVENTS)?;
        Ok(CompiledRules {
            rules,
            alertname,
            shared: Vec::new(),
            extended: vec![EVENTS.clone()],
            plan,
        })
    }

    /// The shared attribute reads, in order.
    fn attribute_reads(&self, columns: &[ArrayRef]) -> Result<Vec<ArrayRef>> {
        let Some((map, keys)) = &self.plan.attributes else {
            return Ok(Vec::new());
        };
        let map = columns
            .get(*map)
            .ok_or_else(|| Error::Internal(format!("batch has no column {map}")))?;
        let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
        attribute_columns(map, &keys)
    }

    /// Every expression narrowed to the columns it reads.
    fn plan(&self) -> Result<Plan> {
        let full = self
            .extended
            .last()
            .ok_or_else(|| Error::Internal("no schema".into()))?;
        let shared: Vec<(&Expr, &Schema)> = self
            .shared
            .iter()
            .zip(&self.extended)
            .map(|(e, schema)| (e, schema.as_ref()))
            .collect();
        Plan::new(&self.rules, &self.alertname, &shared, full)
    }

    /// Every compiled expression, mutably.
    fn roots_mut(&mut self) -> Vec<&mut Expr> {
        let mut roots = vec![&mut self.alertname];
        for r in &mut self.rules {
            roots.push(&mut r.cause);
            roots.extend(r.effect.as_mut());
            roots.extend(r.follow.as_mut());
            if let Some((c, e)) = &mut r.join {
                roots.push(c);
                roots.push(e);
            }
            if let Some((v, s)) = &mut r.rise {
                roots.push(v);
                roots.extend(s.as_mut());
            }
        }
        roots
    }

    /// Finds sub-expressions that occur more than once across the pack, gives each
    /// a column of the extended schema, and rewrites every expression to read it.
    fn share_common_subexpressions(&mut self) -> Result<()> {
        let mut counts: HashMap<Expr, (usize, usize)> = HashMap::new();
        for root in self.roots_mut() {
            root.apply(|node| {
                let leaf = node.is::<Column>() || node.is::<Literal>();
                if !leaf {
                    let size = node_count(node);
                    counts.entry(Arc::clone(node)).or_insert((0, size)).0 += 1;
                }
                Ok(TreeNodeRecursion::Continue)
            })
            .map_err(internal)?;
        }
        // Attribute reads are shared even when they occur once: all of them are
        // read in one pass over the map (see [`SharedColumn`]).
        let mut common: Vec<(Expr, usize)> = counts
            .into_iter()
            .filter(|(e, (n, _))| *n > 1 || attribute_read(e, &EVENTS).is_some())
            .map(|(e, (_, size))| (e, size))
            .collect();
        if common.is_empty() {
            return Ok(());
        }
        // Smallest first, so a larger shared expression can read smaller ones;
        // ties in a fixed order (the expression's text) for a stable schema.
        common.sort_by_key(|a| (a.1, a.0.to_string()));
        let mut fields: Vec<Arc<Field>> = EVENTS.fields().iter().cloned().collect();
        let mut columns: HashMap<Expr, Expr> = HashMap::new();
        let mut shared = Vec::with_capacity(common.len());
        let mut extended = vec![EVENTS.clone()];
        for (expr, _) in common {
            let index = fields.len();
            let name = format!("__shared_{}", shared.len());
            let schema = Schema::new(fields.clone());
            let data_type = expr.data_type(&schema).map_err(internal)?;
            // Its own children read the shared columns made so far.
            let body = replace_shared(Arc::clone(&expr), &columns)?;
            fields.push(Arc::new(Field::new(&name, data_type, true)));
            extended.push(Arc::new(Schema::new(fields.clone())));
            columns.insert(expr, Arc::new(Column::new(&name, index)));
            shared.push(body);
        }
        for root in self.roots_mut() {
            *root = replace_shared(Arc::clone(root), &columns)?;
        }
        self.shared = shared;
        self.extended = extended;
        Ok(())
    }

    /// Evaluates every rule over an `events` batch.
    pub fn evaluate(&self, batch: &RecordBatch) -> Result<Evaluated> {
        let n = batch.num_rows();
        // Every shared sub-expression as a column after the events' own.
        let mut columns: Vec<ArrayRef> = batch.columns().to_vec();
        let mut attributes = self.attribute_reads(&columns)?.into_iter();
        for shared in &self.plan.shared {
            let value = match shared {
                SharedColumn::Expr(e) => eval(&e.expr, &e.input(&columns, n)?)?,
                SharedColumn::Attribute { .. } => attributes
                    .next()
                    .ok_or_else(|| Error::Internal("attribute read missing".into()))?,
            };
            columns.push(value);
        }
        let columns = &columns;
        let mut matches = vec![Matches::default(); n];
        let mut joins = Vec::with_capacity(self.rules.len());
        let mut rises = Vec::with_capacity(self.rules.len());
        for (i, rule) in self.plan.rules.iter().enumerate() {
            let bit = 1u64 << i;
            let cause = eval_bool(&rule.cause, columns, n)?;
            set_bits(&cause, bit, &mut matches, |m| &mut m.cause);
            let effect = match &rule.effect {
                Some(e) => {
                    let effect = eval_bool(e, columns, n)?;
                    set_bits(&effect, bit, &mut matches, |m| &mut m.effect);
                    Some(effect)
                }
                None => None,
            };
            let follow = match &rule.follow {
                Some(f) => {
                    let follow = eval_bool(f, columns, n)?;
                    set_bits(&follow, bit, &mut matches, |m| &mut m.follow);
                    Some(follow)
                }
                None => None,
            };
            // Join and rise values are only needed on the rule's own rows.
            let other = effect.as_ref().or(follow.as_ref());
            joins.push(match (&rule.join, other) {
                (Some((c, e)), Some(other)) => Some((
                    eval_text_on(c, columns, &cause)?,
                    eval_text_on(e, columns, other)?,
                )),
                _ => None,
            });
            rises.push(match (&rule.rise, &effect) {
                (Some((v, s)), Some(effect)) => Some((
                    eval_number_on(v, columns, effect)?,
                    s.as_ref()
                        .map(|s| eval_text_on(s, columns, effect))
                        .transpose()?,
                )),
                _ => None,
            });
        }
        Ok(Evaluated {
            matches,
            alertname: eval_text(&self.plan.alertname, columns, n)?,
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

fn eval_bool(expr: &Narrow, columns: &[ArrayRef], rows: usize) -> Result<BooleanArray> {
    eval(&expr.expr, &expr.input(columns, rows)?)?
        .as_any()
        .downcast_ref::<BooleanArray>()
        .cloned()
        .ok_or_else(|| Error::Internal("predicate did not return booleans".into()))
}

fn eval_text(expr: &Narrow, columns: &[ArrayRef], rows: usize) -> Result<StringArray> {
    as_text(eval(&expr.expr, &expr.input(columns, rows)?)?)
}

fn as_text(array: ArrayRef) -> Result<StringArray> {
    let array = cast(&array, &DataType::Utf8)?;
    array
        .as_any()
        .downcast_ref::<StringArray>()
        .cloned()
        .ok_or_else(|| Error::Internal("text expression did not return text".into()))
}

/// Evaluates only the selected rows (NULL elsewhere): for values of a few rows.
fn eval_on(expr: &Narrow, columns: &[ArrayRef], rows: &BooleanArray) -> Result<ArrayRef> {
    if rows.true_count() == 0 {
        return Ok(arrow::array::new_null_array(
            &expr
                .expr
                .data_type(&expr.schema)
                .map_err(|e| Error::Internal(e.to_string()))?,
            rows.len(),
        ));
    }
    expr.expr
        .evaluate_selection(&expr.input(columns, rows.len())?, rows)
        .and_then(|v| v.into_array(rows.len()))
        .map_err(|e| Error::Internal(e.to_string()))
}

fn eval_text_on(expr: &Narrow, columns: &[ArrayRef], rows: &BooleanArray) -> Result<StringArray> {
    as_text(eval_on(expr, columns, rows)?)
}

fn eval_number_on(
    expr: &Narrow,
    columns: &[ArrayRef],
    rows: &BooleanArray,
) -> Result<Float64Array> {
    let array = cast(&eval_on(expr, columns, rows)?, &DataType::Float64)?;
    array
        .as_any()
        .downcast_ref::<Float64Array>()
        .cloned()
        .ok_or_else(|| Error::Internal("numeric expression did not return numbers".into()))
}

fn internal(e: datafusion::error::DataFusionError) -> Error {
    Error::Internal(e.to_string())
}

/// Nodes in an expression tree.
fn node_count(expr: &Expr) -> usize {
    1 + expr.children().iter().map(|c| node_count(c)).sum::<usize>()
}

/// Replaces every (outermost) occurrence of a shared expression by its column.
fn replace_shared(expr: Expr, columns: &HashMap<Expr, Expr>) -> Result<Expr> {
    if columns.is_empty() {
        return Ok(expr);
    }
    expr.transform_down(|node| match columns.get(&node) {
        Some(column) => Ok(Transformed::new(
            Arc::clone(column),
            true,
            TreeNodeRecursion::Jump,
        )),
        None => Ok(Transformed::no(node)),
    })
    .map(|t| t.data)
    .map_err(|e| Error::Internal(e.to_string()))
}

#[cfg(test)]
mod tests {
    use causeway_rules::{Event, EventKind, EventTime, ProcessingTime, RulePack, Severity};

    use super::*;
    use crate::schema::events_batch;

    fn event(kind: EventKind, source: &str, status: &str, attrs: &[(&str, &str)]) -> Event {
        Event {
            id: Event::derive_id(source, &format!("{kind}{status}{attrs:?}"), status),
            source: source.into(),
            source_event_id: "x".into(),
            kind,
            time: EventTime::from_micros(0),
            ingested_at: ProcessingTime::from_micros(0),
            scope: "prod".into(),
            entity: "checkout".into(),
            severity: Severity::None,
            status: status.into(),
            summary: String::new(),
            attributes: attrs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            raw: "{}".into(),
        }
    }

    #[test]
    fn shared_subexpressions_are_computed_once_and_change_no_match() {
        let pack = RulePack::builtin().expect("pack");
        let shared = CompiledRules::compile(&pack).expect("compiles");
        assert!(shared.shared.len() >= 3, "{}", shared.shared.len());
        // The attribute reads take the one-pass path; the unshared pack below
        // reads every attribute through DataFusion's `get_field`.
        let reads = shared
            .plan
            .shared
            .iter()
            .filter(|c| matches!(c, SharedColumn::Attribute { .. }))
            .count();
        assert!(reads >= 2, "{reads}");
        let mut plain = CompiledRules::compile(&pack).expect("compiles");
        // The same pack without sharing: every expression on its own.
        let fresh = CompiledRules::compile_unshared(&pack).expect("compiles");
        plain.rules = fresh.rules;
        plain.alertname = fresh.alertname;
        plain.shared.clear();
        plain.extended.truncate(1);
        plain.plan = plain.plan().expect("plan");
        let events = vec![
            event(EventKind::Deploy, "github", "success", &[]),
            event(
                EventKind::Alert,
                "alertmanager",
                "firing",
                &[("alertname", "HighErrorRate")],
            ),
            event(
                EventKind::Alert,
                "alertmanager",
                "firing",
                &[("alertname", "Watchdog")],
            ),
            event(EventKind::Alert, "alertmanager", "firing", &[]),
            event(
                EventKind::Alert,
                "alertmanager",
                "resolved",
                &[("alertname", "HighErrorRate")],
            ),
            event(
                EventKind::Change,
                "k8s_audit",
                "succeeded",
                &[
                    ("actor_type", "human"),
                    ("resource", "deployments"),
                    ("change.memory_limit", "1Gi"),
                ],
            ),
            event(EventKind::K8sEvent, "k8s_event", "BackOff", &[]),
            event(
                EventKind::Cost,
                "cost",
                "Usage",
                &[("effective_cost", "12.5"), ("resource_id", "i-1")],
            ),
            event(
                EventKind::Audit,
                "k8s_audit",
                "succeeded",
                &[("subresource", "exec")],
            ),
            event(
                EventKind::Change,
                "cloudtrail",
                "succeeded",
                &[("event_name", "ModifyDBInstance")],
            ),
            event(EventKind::Change, "argocd", "out_of_sync", &[]),
        ];
        let batch = events_batch(&events).expect("batch");
        let a = shared.evaluate(&batch).expect("shared");
        let b = plain.evaluate(&batch).expect("plain");
        assert_eq!(a.matches, b.matches);
        assert!(a.matches.iter().any(|m| m.effect != 0));
        assert_eq!(a.matches[2].effect, 0, "a heartbeat is nobody's effect");
        for row in 0..events.len() {
            assert_eq!(a.alertname(row), b.alertname(row));
            for r in 0..pack.rules().len() {
                assert_eq!(a.rise(row, r), b.rise(row, r));
            }
        }
        assert_eq!(a.rise(7, 9).map(|v| v.0), Some(12.5), "{:?}", a.rise(7, 9));
    }
}
