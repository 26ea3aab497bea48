//! Products of weight matrices with activations: [`matvec`] / [`matmul`] for one-off calls, and
//! [`matmul_group`] over a reusable [`Input`] for the forward pass: several matrices that read
//! the same activations (q, k and v; gate and up) run as one operation on the pool, and each
//! quantised form of the activations is made once for all of them.

use half::f16;

use crate::dot::kernels;
use crate::error::KernelError;
use crate::gemm::{tile_for, PackedF32, RowsOut, Tile, Wide32Acts, WideActs};
use crate::matvec::{form, Form, Matrix, Prepared, QuantActivations, ROWS_PER_TASK, TOKEN_BLOCK};
use crate::pool::KernelPool;
use crate::quant::unpacked::{UnpackedActs, UnpackedTokensFn};
use crate::quant::{
    q8_sums, quantize_q8_0_activations, quantize_q8_1_activations, quantize_q8_k, BlockQ8K,
    BlockQ8_0, BlockQ8_1, Q8Sum, QK, QK_K, ROWS8,
};

/// Most matrices one [`matmul_group`] takes.
pub const MAX_GROUP: usize = 4;

/// Reusable buffers for the quantised forms of one activation matrix: every product that reads
/// the same input (q, k and v; gate and up; a router and its experts) quantises it once, and a
/// session that keeps one of these allocates nothing per token once the buffers have grown.
#[derive(Default)]
pub struct InputBuffers {
    /// Which kernels compute the tokens of inputs made from these buffers.
    kernels: TokenKernels,
    q8: Vec<BlockQ8_0>,
    /// The [`Q8Sum`] of every block of `q8` (for the interleaved Q4_0 kernels).
    q8_sums: Vec<Q8Sum>,
    q8_1: Vec<BlockQ8_1>,
    q8k: Vec<BlockQ8K>,
    wide: WideActs,
    wide32: Wide32Acts,
    /// The activations laid out for the many-token kernels, per quantised form (Q8_0, Q8_1,
    /// Q8_K) as they are and offset: see [`unpacked_slot`].
    unpacked: [UnpackedActs; 6],
}

impl std::fmt::Debug for InputBuffers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InputBuffers").field("q8_blocks", &self.q8.len()).finish()
    }
}

impl InputBuffers {
    /// `n` tokens of `cols` values each, ready for [`matmul_input`].
    pub fn input<'a>(&'a mut self, xs: &'a [f32], n: usize, mode: QuantActivations) -> Input<'a> {
        Input { xs, n, mode, bufs: self, have: [false; 12] }
    }

    /// Sets which kernels compute the tokens of inputs made from these buffers.
    pub fn set_kernels(&mut self, kernels: TokenKernels) {
        self.kernels = kernels;
    }

    /// Which kernels compute the tokens of inputs made from these buffers.
    pub fn kernels(&self) -> TokenKernels {
        self.kernels
    }
}

/// Which kernels compute an input's tokens. The matvec kernels and the GEMM tiles round
/// differently (their sums run in other orders), but each computes a token from that token
/// alone: a token's result depends only on which of the two ran it. So a decode step over
/// several sequences (`PerToken`) gives each sequence what it gets alone, and prompt rows
/// (`Tiles`) give the same results however the prompt is split into chunks or batched with
/// other prompts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TokenKernels {
    /// One token: the matvec kernels; several: the GEMM tiles where the CPU and format have
    /// them.
    #[default]
    Auto,
    /// Every token through the matvec kernels (K-quant tiles equal them bit for bit and are
    /// kept).
    PerToken,
    /// Every token through the GEMM tiles where the CPU and format have them, one token too.
    Tiles,
}

/// An activation matrix (`n` tokens) with its quantised forms, each made on first use.
pub struct Input<'a> {
    xs: &'a [f32],
    n: usize,
    mode: QuantActivations,
    bufs: &'a mut InputBuffers,
    /// Which of q8 (per token), q8k, packed, q8_1, wide, wide32 and the six unpacked layouts
    /// are current.
    have: [bool; 12],
}

impl std::fmt::Debug for Input<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Input").field("tokens", &self.n).field("values", &self.xs.len()).finish()
    }
}

impl Input<'_> {
    /// Tokens.
    pub fn tokens(&self) -> usize {
        self.n
    }

    /// The f32 values.
    pub fn values(&self) -> &[f32] {
        self.xs
    }

    fn ensure(&mut self, f: Form, cols: usize) {
        let n = self.n;
        match f {
            Form::F32 => {}
            Form::Q8 if !self.have[0] => {
                let per = cols / QK;
                self.bufs.q8.resize(n * per, BlockQ8_0 { d: f16::ZERO, qs: [0; QK] });
                for (x, q) in self.xs.chunks_exact(cols).zip(self.bufs.q8.chunks_exact_mut(per)) {
                    quantize_q8_0_activations(x, q);
                }
                self.bufs.q8_sums.resize(n * per, Q8Sum::default());
                q8_sums(&self.bufs.q8, &mut self.bufs.q8_sums);
                self.have[0] = true;
            }
            Form::Q8_1 if !self.have[3] => {
                let per = cols / QK;
                self.bufs.q8_1.resize(n * per, BlockQ8_1::ZERO);
                for (x, q) in self.xs.chunks_exact(cols).zip(self.bufs.q8_1.chunks_exact_mut(per)) {
                    quantize_q8_1_activations(x, q);
                }
                self.have[3] = true;
            }
            Form::Q8K if !self.have[1] => {
                let per = cols / QK_K;
                self.bufs.q8k.resize(n * per, BlockQ8K::ZERO);
                for (x, q) in self.xs.chunks_exact(cols).zip(self.bufs.q8k.chunks_exact_mut(per)) {
                    quantize_q8_k(x, q);
                }
                self.have[1] = true;
            }
            _ => {}
        }
    }

    /// Token `t`'s Q8_0 block sums, once [`Self::ensure`] made the Q8_0 form (else empty).
    fn sums(&self, f: Form, cols: usize, t: usize) -> &[Q8Sum] {
        let per = cols / QK;
        match f {
            Form::Q8 if self.have[0] => &self.bufs.q8_sums[t * per..(t + 1) * per],
            _ => &[],
        }
    }

    /// Every token's Q8_0 block sums (else empty).
    fn all_sums(&self, f: Form) -> &[Q8Sum] {
        match f {
            Form::Q8 if self.have[0] => &self.bufs.q8_sums,
            _ => &[],
        }
    }

    fn token(&self, f: Form, cols: usize, t: usize) -> Prepared<'_> {
        match f {
            Form::F32 => Prepared::F32(&self.xs[t * cols..(t + 1) * cols]),
            Form::Q8 => {
                let per = cols / QK;
                Prepared::Q8(&self.bufs.q8[t * per..(t + 1) * per])
            }
            Form::Q8_1 => {
                let per = cols / QK;
                Prepared::Q8_1(&self.bufs.q8_1[t * per..(t + 1) * per])
            }
            Form::Q8K => {
                let per = cols / QK_K;
                Prepared::Q8K(&self.bufs.q8k[t * per..(t + 1) * per])
            }
        }
    }

    /// The Q8_K activations packed for the wide tiles.
    fn ensure_wide(&mut self, cols: usize) {
        self.ensure(Form::Q8K, cols);
        if !self.have[4] {
            #[cfg(target_arch = "x86_64")]
            self.bufs.wide.pack_into(&self.bufs.q8k, cols / QK_K);
            self.have[4] = true;
        }
    }

    /// The activations in form `f` laid out for the many-token kernels (`offset`: as unsigned
    /// bytes).
    fn ensure_unpacked(&mut self, cols: usize, f: Form, offset: bool) {
        let slot = unpacked_slot(f, offset);
        if self.have[6 + slot] {
            return;
        }
        self.ensure(f, cols);
        let acts = &mut self.bufs.unpacked[slot];
        match f {
            Form::Q8K => acts.fill_q8k(&self.bufs.q8k, cols / QK_K, offset),
            Form::Q8 => acts.fill_q8_0(&self.bufs.q8, cols / QK, offset),
            Form::Q8_1 => acts.fill_q8_1(&self.bufs.q8_1, cols / QK),
            Form::F32 => unreachable!("the many-token kernels read quantised activations"),
        }
        self.have[6 + slot] = true;
    }

    /// The Q8_0 activations packed for the 32-value wide tiles.
    fn ensure_wide32(&mut self, cols: usize) {
        self.ensure(Form::Q8, cols);
        if !self.have[5] {
            #[cfg(target_arch = "x86_64")]
            self.bufs.wide32.pack_into(&self.bufs.q8, cols / QK);
            self.have[5] = true;
        }
    }
}

/// `y = W x` for one token. With a pool, rows are split across its threads.
pub fn matvec(
    w: &Matrix,
    x: &[f32],
    y: &mut [f32],
    pool: Option<&KernelPool>,
) -> Result<(), KernelError> {
    matvec_with(w, x, y, pool, QuantActivations::default())
}

/// [`matvec`] with a choice of activation handling for quantised weights.
pub fn matvec_with(
    w: &Matrix,
    x: &[f32],
    y: &mut [f32],
    pool: Option<&KernelPool>,
    mode: QuantActivations,
) -> Result<(), KernelError> {
    matmul_with(w, x, y, 1, pool, mode)
}

/// `Y = X W^T` for `n` tokens (prefill): `xs` is `n x cols`, `ys` is `n x rows`.
pub fn matmul(
    w: &Matrix,
    xs: &[f32],
    ys: &mut [f32],
    n: usize,
    pool: Option<&KernelPool>,
) -> Result<(), KernelError> {
    matmul_with(w, xs, ys, n, pool, QuantActivations::default())
}

/// [`matmul`] with a choice of activation handling for quantised weights.
pub fn matmul_with(
    w: &Matrix,
    xs: &[f32],
    ys: &mut [f32],
    n: usize,
    pool: Option<&KernelPool>,
    mode: QuantActivations,
) -> Result<(), KernelError> {
    let mut bufs = InputBuffers::default();
    matmul_group(&mut [(w, ys)], &mut bufs.input(xs, n, mode), pool)
}

/// `Y = X W^T` over a prepared [`Input`].
pub fn matmul_input(
    w: &Matrix,
    x: &mut Input,
    ys: &mut [f32],
    pool: Option<&KernelPool>,
) -> Result<(), KernelError> {
    matmul_group(&mut [(w, ys)], x, pool)
}

/// How one matrix of a group is computed.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Path {
    /// One token: the row-group matvec kernels.
    Rows,
    /// Several tokens, tiled GEMM.
    Gemm,
    /// Several tokens, row groups over every token (no GEMM for this format or CPU).
    RowsTokens,
    /// Several tokens, each row unpacked once for all of them (no GEMM for this format or CPU).
    Unpacked,
}

/// `Y_i = X W_i^T` for every `(W_i, Y_i)` of `group` (at most [`MAX_GROUP`]), all reading the
/// same input, as one operation on the pool (see [`matmul_batch`]).
pub fn matmul_group(
    group: &mut [(&Matrix, &mut [f32])],
    x: &mut Input,
    pool: Option<&KernelPool>,
) -> Result<(), KernelError> {
    if group.len() > MAX_GROUP {
        return Err(KernelError::Shape(format!("{} matrices in one group", group.len())));
    }
    let len = group.len();
    let mut products: [Option<Product>; MAX_GROUP] = Default::default();
    for (slot, (w, ys)) in products.iter_mut().zip(group.iter_mut()) {
        *slot = Some(Product { w: **w, input: 0, out: ys });
    }
    let mut refs: [Option<&mut Product>; MAX_GROUP] = Default::default();
    for (r, p) in refs.iter_mut().zip(products.iter_mut()) {
        *r = p.as_mut();
    }
    matmul_refs(&mut refs[..len], std::slice::from_mut(x), pool)
}

/// One product of a [`matmul_batch`]: `out = inputs[input] W^T`.
#[derive(Debug)]
pub struct Product<'w, 'o> {
    /// The weights.
    pub w: Matrix<'w>,
    /// Which of the batch's inputs it reads.
    pub input: usize,
    /// Where the result goes (`tokens x rows`).
    pub out: &'o mut [f32],
}

/// Most products one pool operation takes; a longer batch runs as several.
pub const MAX_BATCH: usize = 48;

/// Every product of `batch` (each reading one of `inputs`) as one operation on the pool: their
/// row chunks are handed out from one counter, so the workers meet once for the whole batch
/// (q/k/v; gate and up; a layer's ready experts). One token runs the row-group matvec kernels,
/// each thread taking a few long runs of rows so it streams a contiguous region; more tokens
/// run the tiled GEMM where the CPU has one, else row groups over every token.
pub fn matmul_batch(
    batch: &mut [Product],
    inputs: &mut [Input],
    pool: Option<&KernelPool>,
) -> Result<(), KernelError> {
    for part in batch.chunks_mut(MAX_BATCH) {
        let mut refs: [Option<&mut Product>; MAX_BATCH] = std::array::from_fn(|_| None);
        let len = part.len();
        for (r, p) in refs.iter_mut().zip(part.iter_mut()) {
            *r = Some(p);
        }
        matmul_refs(&mut refs[..len], inputs, pool)?;
    }
    Ok(())
}

/// Long runs of rows per thread for one token: each thread streams a region of a matrix rather
/// than hopping between short chunks (its prefetches then fetch rows it will use).
const DECODE_RUNS_PER_THREAD: usize = 2;

fn matmul_refs(
    batch: &mut [Option<&mut Product>],
    inputs: &mut [Input],
    pool: Option<&KernelPool>,
) -> Result<(), KernelError> {
    let len = batch.len();
    debug_assert!(len <= MAX_BATCH);
    for p in batch.iter().flatten() {
        let x = inputs.get(p.input).ok_or_else(|| {
            KernelError::Shape(format!("product reads input {} of {}", p.input, inputs.len()))
        })?;
        let (w, n) = (&p.w, x.n);
        if x.xs.len() != n * w.cols() || p.out.len() != n * w.rows() {
            return Err(KernelError::Shape(format!(
                "matmul of {}x{} with {n} tokens: xs[{}], ys[{}]",
                w.rows(),
                w.cols(),
                x.xs.len(),
                p.out.len()
            )));
        }
    }
    let mut paths = [Path::Rows; MAX_BATCH];
    let mut forms = [Form::F32; MAX_BATCH];
    let mut tiles: [Option<Tile>; MAX_BATCH] = [None; MAX_BATCH];
    for (i, p) in batch.iter().flatten().enumerate() {
        let x = &inputs[p.input];
        let (w, n) = (&p.w, x.n);
        forms[i] = form(w.dtype(), x.mode);
        // Where every token must get what it gets alone, only a tile that equals matvec bit for
        // bit (tests/kquant.rs, traits_tests.rs) may run.
        let per_token = x.bufs.kernels == TokenKernels::PerToken;
        tiles[i] = tile_for(w.dtype(), per_token)
            .filter(|&t| tile_reads(t, forms[i]) && !w.is_interleaved());
        paths[i] = match x.bufs.kernels {
            TokenKernels::Tiles if tiles[i].is_some() => Path::Gemm,
            TokenKernels::PerToken | TokenKernels::Auto if n > 1 && tiles[i].is_some() => {
                Path::Gemm
            }
            _ if n == 1 => Path::Rows,
            _ if unpacked_kernel(w, forms[i]).is_some() => Path::Unpacked,
            _ => Path::RowsTokens,
        };
    }
    prepare_inputs(batch, inputs, (&paths, &forms, &tiles), pool);
    let inputs = &*inputs;
    let threads = pool.map_or(1, |p| p.threads());
    let mut mats: [Option<(Matrix, usize)>; MAX_BATCH] = [None; MAX_BATCH];
    let mut outs: [Option<RowsOut>; MAX_BATCH] = std::array::from_fn(|_| None);
    let mut chunks = [ROWS_PER_TASK; MAX_BATCH];
    let mut ends = [0usize; MAX_BATCH];
    let mut total = 0;
    for (i, p) in batch.iter_mut().flatten().enumerate() {
        let rows = p.w.rows();
        if paths[i] == Path::Rows {
            chunks[i] = rows
                .div_ceil(threads * DECODE_RUNS_PER_THREAD)
                .next_multiple_of(ROWS8)
                .max(ROWS_PER_TASK);
        }
        total += rows.div_ceil(chunks[i]);
        mats[i] = Some((p.w, p.input));
        outs[i] = Some(RowsOut::new(p.out, rows));
        ends[i] = total;
    }
    let ends = &ends[..len];
    let k = kernels();
    let body = |task: usize| {
        let i = ends.iter().position(|&e| task < e).expect("task index below the total");
        let (w, input) = mats[i].expect("a product with chunks has a matrix");
        let (out, x) = (outs[i].as_ref().expect("and an output"), &inputs[input]);
        let chunk = task - if i == 0 { 0 } else { ends[i - 1] };
        let first = chunk * chunks[i];
        let m = chunks[i].min(w.rows() - first);
        match paths[i] {
            Path::Rows => {
                // SAFETY: chunk indices are handed out once each, so rows first..first + m of
                // this output belong to this task alone.
                let ys = unsafe { out.token_rows_mut(0, first, m) };
                let sums = x.sums(forms[i], w.cols(), 0);
                w.rows_into(k, first, (&x.token(forms[i], w.cols(), 0), sums), ys);
            }
            Path::Gemm => {
                gemm_rows(tiles[i].expect("a GEMM path has a tile"), &w, x, first, m, out)
            }
            Path::RowsTokens => rows_tokens(&w, x, forms[i], (first, m), out),
            Path::Unpacked => {
                let (kernel, offset) = unpacked_kernel(&w, forms[i]).expect("chosen for it");
                let acts = &x.bufs.unpacked[unpacked_slot(forms[i], offset)];
                kernel(w.bytes(), first, m, acts, acts.per, out)
            }
        }
    };
    match pool {
        Some(p) if p.threads() > 1 && total > 1 => p.for_each_index(total, &body),
        _ => (0..total).for_each(body),
    }
    Ok(())
}

/// Makes the activation forms each product's path reads from its input: input by input on
/// the pool where there are several (prefill gives every expert its own tokens to quantise),
/// each input's forms the same whichever thread makes them.
fn prepare_inputs(
    batch: &[Option<&mut Product>],
    inputs: &mut [Input],
    (paths, forms, tiles): (&[Path; MAX_BATCH], &[Form; MAX_BATCH], &[Option<Tile>; MAX_BATCH]),
    pool: Option<&KernelPool>,
) {
    let prepare = |j: usize, x: &mut Input| {
        for (i, p) in batch.iter().flatten().enumerate().filter(|(_, p)| p.input == j) {
            let cols = p.w.cols();
            match (paths[i], tiles[i]) {
                (Path::Unpacked, _) => {
                    let (_, offset) = unpacked_kernel(&p.w, forms[i]).expect("chosen for it");
                    x.ensure_unpacked(cols, forms[i], offset)
                }
                (Path::Gemm, Some(Tile::Super(_))) => x.ensure(Form::Q8K, cols),
                (Path::Gemm, Some(Tile::Wide(_))) => x.ensure_wide(cols),
                (Path::Gemm, Some(Tile::Wide32(_))) => x.ensure_wide32(cols),
                (Path::Gemm, _) => {}
                _ => x.ensure(forms[i], cols),
            }
        }
    };
    match pool {
        Some(p) if p.threads() > 1 && inputs.len() > 1 => {
            p.for_each_chunk(inputs, 1, &|j, x| prepare(j, &mut x[0]))
        }
        _ => inputs.iter_mut().enumerate().for_each(|(j, x)| prepare(j, x)),
    }
}

/// The many-token kernel (and whether it reads offset activations) for `w` against
/// activations in form `f`, where its type has one here.
fn unpacked_kernel(w: &Matrix, f: Form) -> Option<(UnpackedTokensFn, bool)> {
    if f == Form::F32 || w.is_interleaved() {
        return None;
    }
    let k = kernels();
    w.dtype().traits().tokens.and_then(|t| t.for_isa(k.isa, k.table_isa))
}

/// Where the layout of form `f` (offset or not) is kept in [`InputBuffers`].
fn unpacked_slot(f: Form, offset: bool) -> usize {
    let form = match f {
        Form::Q8 => 0,
        Form::Q8_1 => 1,
        Form::Q8K | Form::F32 => 2,
    };
    2 * form + offset as usize
}

/// Whether a tile computes a product whose activations are in form `f`: quantised weights only
/// against quantised activations (the exact reference mode keeps f32 activations and
/// dequantises), float weights against f32.
fn tile_reads(tile: Tile, f: Form) -> bool {
    match tile {
        Tile::Wide32(_) => f == Form::Q8,
        Tile::Super(_) | Tile::Wide(_) => f == Form::Q8K,
        Tile::Float(_) => f == Form::F32,
    }
}

/// Rows `first..first + m` of `w` against every token with the GEMM tiles.
fn gemm_rows(tile: Tile, w: &Matrix, x: &Input, first: usize, m: usize, out: &RowsOut) {
    match tile {
        Tile::Super(tile) => {
            tile(w.bytes(), first, m, &x.bufs.q8k, w.cols() / QK_K, out);
        }
        Tile::Wide(tile) => tile(w.bytes(), first, m, &x.bufs.wide, w.cols() / QK_K, out),
        Tile::Wide32(tile) => tile(w.bytes(), first, m, &x.bufs.wide32, w.cols() / QK, out),
        Tile::Float(tile) => tile(w.bytes(), first, m, &PackedF32::new(x.xs, w.cols()), out),
    }
}

/// Rows `first..first + m` (at most [`ROWS_PER_TASK`]) against every token without GEMM tiles:
/// the row-group kernels over a block of tokens at a time into a rows x tokens scratch on the
/// stack, then each token's rows copied to where they go.
fn rows_tokens(w: &Matrix, x: &Input, f: Form, (first, m): (usize, usize), out: &RowsOut) {
    debug_assert!(m <= ROWS_PER_TASK);
    let (k, cols) = (kernels(), w.cols());
    let all_sums = x.all_sums(f);
    let per = cols / QK;
    let mut scratch = [0.0f32; ROWS_PER_TASK * TOKEN_BLOCK];
    let mut tokens = [Prepared::F32(&[]); TOKEN_BLOCK];
    for t0 in (0..x.n).step_by(TOKEN_BLOCK) {
        let nt = (x.n - t0).min(TOKEN_BLOCK);
        for (t, p) in tokens[..nt].iter_mut().enumerate() {
            *p = x.token(f, cols, t0 + t);
        }
        let sums =
            if all_sums.is_empty() { all_sums } else { &all_sums[t0 * per..(t0 + nt) * per] };
        let block = &mut scratch[..m * nt];
        w.rows_tokens_into(k, first, (&tokens[..nt], sums), block);
        for t in 0..nt {
            // SAFETY: this task owns rows first..first + m (chunks are handed out once each).
            let ys = unsafe { out.token_rows_mut(t0 + t, first, m) };
            for (r, y) in ys.iter_mut().enumerate() {
                *y = block[r * nt + t];
            }
        }
    }
}
