// The steady-state check of the fused kernel's kept pointer table, in native code (see check.py).
//
// One call per step walks a group's parameters, their gradients and their state dicts and decides whether
// the table (CachedLaunch in kept.py) still applies; where it does it writes the gradients' pointers
// into the table's gradient slots and returns the common step count. Where anything differs from what the
// table was built for it returns None and the engine's general path steps the group (and raises, naming
// the parameter, where a tensor is wrong). It reads the tensors' C++ objects directly instead of going
// through torch's Python bindings (50-100 ns per attribute and tensor). What remains is memory latency: a
// tensor's objects lie on about nine different pages. Measured on 2,000 small tensors right after a kernel
// call (2 cores): 0.36-0.77 us a tensor on one thread, 0.22-0.38 us with the C++ objects read on two
// threads (below), against about 3 us for the Python check.
//
// Only ATen/core/Tensor.h is included (a few seconds to compile); torch's Python binding header, which
// drags in pybind11, would take 20 s. The tensor a Python torch.Tensor object holds is therefore read at
// sizeof(PyObject) into the object, where THPVariable keeps its at::Tensor; check.py verifies that
// layout against torch's own Tensor._cdata before the first use and refuses this check if it differs.
// Only objects whose type is exactly torch.Tensor or torch.nn.Parameter are read that way.
#include <Python.h>
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <vector>

#define ADAMKIT_EXPORT extern "C" __attribute__((visibility("default")))

namespace {

inline c10::TensorImpl* impl_of(PyObject* obj) {
  return *reinterpret_cast<c10::TensorImpl**>(reinterpret_cast<char*>(obj) + sizeof(PyObject));
}

// The dispatch keys of an ordinary CPU tensor (with or without autograd); anything else (lazy negation or
// conjugation, Python or zero-tensor dispatch, functionalization, sparse or mkldnn, a wrapper of any kind)
// is left to the general path.
const c10::DispatchKeySet PLAIN_KEYS({c10::DispatchKey::CPU, c10::DispatchKey::ADInplaceOrView,
                                      c10::DispatchKey::AutogradCPU, c10::DispatchKey::AutocastCPU});

// A plain dense tensor the kernel may step as a flat array: CPU, strided, contiguous, ordinary dispatch keys,
// the given dtype and sizes, with accessible storage.
inline bool plain(const c10::TensorImpl* t, int64_t dtype, const int64_t* sizes, int64_t ndim) {
  if (!PLAIN_KEYS.isSupersetOf(t->key_set()) || t->device_type() != c10::DeviceType::CPU ||
      t->layout() != c10::kStrided || t->is_python_dispatch() || t->is_neg() || t->is_conj() ||
      t->_is_zerotensor() || t->has_symbolic_sizes_strides() || !t->has_storage()) {
    return false;
  }
  (void)t->storage();  // throws (caught by the caller: None) where the storage must not be accessed
  if (static_cast<int64_t>(t->dtype().toScalarType()) != dtype) {
    return false;
  }
  c10::IntArrayRef actual = t->sizes();
  if (static_cast<int64_t>(actual.size()) != ndim) {
    return false;
  }
  for (int64_t d = 0; d < ndim; ++d) {
    if (actual[d] != sizes[d]) {
      return false;
    }
  }
  return t->is_contiguous();
}

// how many tensors ahead each pass prefetches (a few hundred ns of memory latency over ~10-20 ns a tensor)
constexpr int64_t AHEAD = 16;
// the fewest tensors a thread of the check reads (below, starting a thread costs more than it saves)
constexpr int64_t MIN_SHARE = 128;
// the most threads a check reads on
constexpr int MAX_THREADS = 64;

inline void prefetch_lines(const void* p, size_t bytes) {
  if (p == nullptr) {
    return;
  }
  const char* c = static_cast<const char*>(p);
  for (size_t off = 0; off < bytes; off += 64) {
    __builtin_prefetch(c + off);
  }
  __builtin_prefetch(c + bytes - 1);
}

inline void prefetch_object(PyObject* obj) {  // its type and, at sizeof(PyObject), its TensorImpl pointer
  __builtin_prefetch(obj);
  __builtin_prefetch(reinterpret_cast<char*>(obj) + sizeof(PyObject));
}

inline PyObject* none() {
  Py_RETURN_NONE;
}

}  // namespace

ADAMKIT_EXPORT int adamkit_check_abi_version(void) { return 3; }

namespace {
// The fused kernel's thread pool (adamkit_parallel_run in pool.h): run(n, fn, ctx) calls fn(ctx, tid, n)
// for tid < n on up to n threads and returns how many it used. One pool in the process, no OpenMP here:
// torch's at::parallel_for is an OpenMP pragma in its headers, which would link this compiler's runtime.
using task_fn = void (*)(void*, int, int);
using parallel_run_fn = int (*)(int, task_fn, void*);
parallel_run_fn parallel_run = nullptr;
}  // namespace

// Hand the check the kernel's pool (check.native does, with the kernel's address); without it the check
// reads on the calling thread.
ADAMKIT_EXPORT void adamkit_check_use_pool(void* run) { parallel_run = reinterpret_cast<parallel_run_fn>(run); }

// The TensorImpl address of a torch.Tensor/Parameter object as this build reads it (0 for other objects);
// check.py compares it with Tensor._cdata before trusting the layout.
ADAMKIT_EXPORT intptr_t adamkit_check_impl(PyObject* obj, PyObject* tensor_type, PyObject* param_type) {
  if (Py_TYPE(obj) != reinterpret_cast<PyTypeObject*>(tensor_type) &&
      Py_TYPE(obj) != reinterpret_cast<PyTypeObject*>(param_type)) {
    return 0;
  }
  return reinterpret_cast<intptr_t>(impl_of(obj));
}

// The ScalarType code of a tensor (what the check compares dtypes with), -1 for other objects.
ADAMKIT_EXPORT int64_t adamkit_check_dtype(PyObject* obj, PyObject* tensor_type, PyObject* param_type) {
  if (Py_TYPE(obj) != reinterpret_cast<PyTypeObject*>(tensor_type) &&
      Py_TYPE(obj) != reinterpret_cast<PyTypeObject*>(param_type)) {
    return -1;
  }
  try {
    return static_cast<int64_t>(impl_of(obj)->dtype().toScalarType());
  } catch (...) {
    return -1;
  }
}

namespace {

// The passes over tensors [lo, hi) that read only C++ objects (no Python API, so any thread may run them
// while the calling thread holds the GIL): each parameter's TensorImpl (dtype, shape, contiguity), its
// storage (the same memory as kept) and autograd metadata (the gradient); the state tensors' objects (a
// plain torch.Tensor, as eligible() requires); the gradients' and the state tensors' TensorImpls; their
// storages (the gradients' pointers, for the kernel; the state tensors', as kept). ti, gi and vi as in
// adamkit_check_table. False where anything differs (or torch refuses to describe a tensor).
bool check_tensors(int64_t lo, int64_t hi, int64_t count, int64_t n_slots, const PyTypeObject* tensor_t,
                   c10::TensorImpl** ti, c10::TensorImpl** gi, c10::TensorImpl** vi, const int64_t* param_ptrs,
                   const int64_t* state_ptrs, const int64_t* dtypes, const int64_t* dims, const int64_t* sizes,
                   void** grad_out) {
  try {
    const int64_t param_dtype = dtypes[0];
    for (int64_t i = lo; i < hi; ++i) {
      if (i + AHEAD < hi) {
        prefetch_lines(ti[i + AHEAD], sizeof(c10::TensorImpl));
        for (int64_t k = 0; k < n_slots; ++k) {
          prefetch_object(reinterpret_cast<PyObject*>(vi[k * count + i + AHEAD]));
        }
      }
      if (!plain(ti[i], param_dtype, sizes + dims[i], dims[i + 1] - dims[i])) {
        return false;
      }
      for (int64_t k = 0; k < n_slots; ++k) {
        PyObject* v = reinterpret_cast<PyObject*>(vi[k * count + i]);
        if (Py_TYPE(v) != tensor_t) {
          return false;
        }
        vi[k * count + i] = impl_of(v);
      }
    }
    for (int64_t i = lo; i < hi; ++i) {
      if (i + AHEAD < hi) {
        const c10::TensorImpl* t = ti[i + AHEAD];
        prefetch_lines(t->unsafe_storage().unsafeGetStorageImpl(), 128);
        prefetch_lines(t->autograd_meta(), 128);
        for (int64_t k = 0; k < n_slots; ++k) {
          prefetch_lines(vi[k * count + i + AHEAD], sizeof(c10::TensorImpl));
        }
      }
      if (reinterpret_cast<int64_t>(ti[i]->mutable_data()) != param_ptrs[i]) {
        return false;
      }
      const at::Tensor& grad = ti[i]->grad();
      if (!grad.defined()) {
        return false;
      }
      gi[i] = grad.unsafeGetTensorImpl();
    }
    for (int64_t i = lo; i < hi; ++i) {
      if (i + AHEAD < hi) {
        prefetch_lines(gi[i + AHEAD], sizeof(c10::TensorImpl));
        for (int64_t k = 0; k < n_slots; ++k) {
          prefetch_lines(vi[k * count + i + AHEAD]->unsafe_storage().unsafeGetStorageImpl(), 128);
        }
      }
      const int64_t* shape = sizes + dims[i];
      const int64_t ndim = dims[i + 1] - dims[i];
      if (!plain(gi[i], param_dtype, shape, ndim)) {
        return false;
      }
      for (int64_t k = 0; k < n_slots; ++k) {
        if (!plain(vi[k * count + i], dtypes[1 + k], shape, ndim) ||
            reinterpret_cast<int64_t>(vi[k * count + i]->mutable_data()) != state_ptrs[k * count + i]) {
          return false;
        }
      }
    }
    for (int64_t i = lo; i < hi; ++i) {
      if (i + AHEAD < hi) {
        prefetch_lines(gi[i + AHEAD]->unsafe_storage().unsafeGetStorageImpl(), 128);
      }
      const void* gptr = gi[i]->data();
      if (gptr == nullptr && gi[i]->numel() != 0) {
        return false;
      }
      grad_out[i] = const_cast<void*>(gptr);  // the kernel only reads the gradient
    }
  } catch (...) {  // a tensor torch refuses to describe (e.g. no data pointer): the general path decides
    return false;
  }
  return true;
}

}  // namespace

namespace {

// The arguments of check_tensors shared by the threads of one check, and each share's verdict.
struct CheckShares {
  int64_t count, n_slots;
  const PyTypeObject* tensor_t;
  c10::TensorImpl **ti, **gi, **vi;
  const int64_t *param_ptrs, *state_ptrs, *dtypes, *dims, *sizes;
  void** grad_out;
  bool ok[MAX_THREADS];
};

void check_share(void* ctx, int tid, int nth) {
  auto* c = static_cast<CheckShares*>(ctx);
  c->ok[tid] = check_tensors(c->count * tid / nth, c->count * (tid + 1) / nth, c->count, c->n_slots, c->tensor_t,
                             c->ti, c->gi, c->vi, c->param_ptrs, c->state_ptrs, c->dtypes, c->dims, c->sizes,
                             c->grad_out);
}

}  // namespace

// The check. params: list of `count` tensors; state_dicts: list of `count` dicts; slots: tuple of the state
// names the kernel uses (n_slots of them); step_key: "step". Kept when the table was built: param_ptrs[count],
// state_ptrs[n_slots * count] (slot-major), dtypes[1 + n_slots] (the parameters', then each slot's),
// dims[count + 1] (prefix offsets into sizes), sizes[dims[count]] (each parameter's shape). nthreads: at
// most this many threads read the tensors' C++ objects, each at least MIN_SHARE tensors.
// Returns a new reference: the step count shared by every state dict (an int) with grad_out[0:count] set
// to the gradients' data pointers, or None (grad_out then partly written: unused until a check succeeds).
//
// Right after a step the kernel has streamed the whole group through the caches, so the ~30 cache lines a
// tensor's objects span (Python objects, TensorImpls, storages, autograd metadata, dict tables) all come
// from memory. One loop that follows each tensor's chain of pointers waits for every one of them in turn.
// The walk is therefore split into passes by depth of indirection: each pass reads
// objects whose addresses the previous pass found and prefetches those of the tensors AHEAD iterations on,
// so that many loads are in flight at once. The Python objects (the first two passes: types, dict lookups)
// are read on the calling thread, which holds the GIL; the C++ objects behind them (check_tensors, most of
// the lines) are read by up to nthreads threads of the kernel's pool, each on its own share of the tensors,
// so that each core's loads are in flight at once too.
ADAMKIT_EXPORT PyObject* adamkit_check_table(
    PyObject* params, PyObject* state_dicts, PyObject* slots, PyObject* step_key, PyObject* tensor_type,
    PyObject* param_type, int64_t count, const int64_t* param_ptrs, const int64_t* state_ptrs,
    const int64_t* dtypes, const int64_t* dims, const int64_t* sizes, void** grad_out, int64_t nthreads) {
  if (!PyList_CheckExact(params) || !PyList_CheckExact(state_dicts) || !PyTuple_CheckExact(slots)) {
    PyErr_SetString(PyExc_TypeError, "adamkit_check_table: params and state_dicts must be lists, slots a tuple");
    return nullptr;
  }
  if (count <= 0 || PyList_GET_SIZE(params) != count || PyList_GET_SIZE(state_dicts) != count) {
    return none();
  }
  const auto* tensor_t = reinterpret_cast<PyTypeObject*>(tensor_type);
  const auto* param_t = reinterpret_cast<PyTypeObject*>(param_type);
  const int64_t n_slots = PyTuple_GET_SIZE(slots);
  PyObject** ps = reinterpret_cast<PyListObject*>(params)->ob_item;
  PyObject** ds = reinterpret_cast<PyListObject*>(state_dicts)->ob_item;
  // scratch, per calling thread: the parameters' TensorImpls, their gradients', and each slot's state tensors'
  thread_local std::vector<c10::TensorImpl*> scratch;
  scratch.resize(static_cast<size_t>(count * (2 + n_slots)));
  c10::TensorImpl** ti = scratch.data();
  c10::TensorImpl** gi = ti + count;
  c10::TensorImpl** vi = gi + count;  // slot-major; first the state values (PyObject*), then their TensorImpls
  PyObject* step = nullptr;  // borrowed from the first state dict
  // 1. the Python objects: a parameter's type and its TensorImpl, the state dict's type
  for (int64_t i = 0; i < count; ++i) {
    if (i + AHEAD < count) {
      prefetch_object(ps[i + AHEAD]);
      prefetch_object(ds[i + AHEAD]);
    }
    PyObject* p = ps[i];
    if ((Py_TYPE(p) != tensor_t && Py_TYPE(p) != param_t) || !PyDict_CheckExact(ds[i])) {
      return none();
    }
    ti[i] = impl_of(p);
  }
  // 2. the state dicts' tables: the step count and the state tensors' objects
  for (int64_t i = 0; i < count; ++i) {
    if (i + AHEAD < count) {
      prefetch_lines(reinterpret_cast<PyDictObject*>(ds[i + AHEAD])->ma_keys, 128);
    }
    PyObject* d = ds[i];
    PyObject* s = PyDict_GetItemWithError(d, step_key);
    if (s == nullptr || !PyLong_CheckExact(s)) {
      PyErr_Clear();
      return none();
    }
    if (step == nullptr) {
      step = s;
    } else if (s != step) {
      int same = PyObject_RichCompareBool(s, step, Py_EQ);
      if (same != 1) {
        PyErr_Clear();
        return none();
      }
    }
    for (int64_t k = 0; k < n_slots; ++k) {
      PyObject* v = PyDict_GetItemWithError(d, PyTuple_GET_ITEM(slots, k));
      if (v == nullptr) {
        PyErr_Clear();
        return none();
      }
      vi[k * count + i] = reinterpret_cast<c10::TensorImpl*>(v);  // the object, for now
    }
  }
  // 3. the C++ objects, in contiguous shares of the tensors
  int64_t threads = nthreads < 1 ? 1 : nthreads;
  if (threads > count / MIN_SHARE) {
    threads = count / MIN_SHARE > 1 ? count / MIN_SHARE : 1;
  }
  if (threads > MAX_THREADS) {
    threads = MAX_THREADS;
  }
  bool ok = true;
  if (threads > 1 && parallel_run != nullptr) {
    CheckShares shares{count, n_slots, tensor_t, ti, gi, vi, param_ptrs, state_ptrs, dtypes, dims, sizes, grad_out, {}};
    const int used = parallel_run(static_cast<int>(threads), check_share, &shares);
    for (int t = 0; t < used; ++t) {
      ok = ok && shares.ok[t];
    }
  } else {
    ok = check_tensors(0, count, count, n_slots, tensor_t, ti, gi, vi, param_ptrs, state_ptrs, dtypes, dims, sizes,
                       grad_out);
  }
  if (!ok) {
    return none();
  }
  Py_INCREF(step);
  return step;
}

// state_dicts[i][key] = value for every dict of the list (the step count after a step from the table).
ADAMKIT_EXPORT int adamkit_check_set_steps(PyObject* state_dicts, PyObject* key, PyObject* value) {
  if (!PyList_CheckExact(state_dicts)) {
    PyErr_SetString(PyExc_TypeError, "adamkit_check_set_steps: state_dicts must be a list");
    return -1;
  }
  const Py_ssize_t n = PyList_GET_SIZE(state_dicts);
  for (Py_ssize_t i = 0; i < n; ++i) {
    if (PyObject_SetItem(PyList_GET_ITEM(state_dicts, i), key, value) != 0) {
      return -1;
    }
  }
  return 0;
}
