"""The README's tuned-against-tuned comparisons, recomputed from this folder's store with the report's own
statistic (paired differences over the final seeds, 95 % paired bootstrap, adamkit.bench.judge).

    python results/2026-12-01-full/tuned_vs_tuned.py results/2026-12-01-full
"""
import sys
from adamkit.bench import analysis, judge
res = analysis.load(sys.argv[1])
pairs = [("fmnist_resnet","adabelief","adam","test_accuracy","higher"),("fmnist_resnet","adabelief","sgd","test_accuracy","higher"),
         ("fmnist_resnet","adam","sgd","test_accuracy","higher"),
         ("char_lstm1","adabelief","adam","test_bpc","lower"),("char_lstm1","eadam","adam","test_bpc","lower"),
         ("word_lstm1","adabelief","adam","test_ppl","lower"),("gan_ring8","adabelief","adam","fd","lower"),
         ("gan_ring8","adabelief","adam","modes_covered","higher"),
         ("gpt_noclip_b8","adopt","adam","loss_spikes","lower"),("gpt_noclip_b8","adopt","adam","test_bpc","lower"),
         ("vae_fmnist","adopt","adam","test_neg_elbo","lower"),("hopper_ppo","adopt","adam","eval_return","higher"),
         ("fm_criteo","agd","adam","test_auc","higher"),("mnist1d_cnn","adabelief","adam","test_accuracy","higher"),
         ("mnist1d_cnn","adabelief","sgd","test_accuracy","higher"),("mnist1d_cnn","eadam","adam","test_accuracy","higher"),
         ("mnist1d_cnn","agd","adam","test_accuracy","higher"),("mnist1d_cnn","adopt","adam","test_accuracy","higher")]
insts = {i.key: i for i in res.instances}
for key, a, b, metric, direction in pairs:
    inst = insts[key]
    A, B = res.arm(key, a, "tuned"), res.arm(key, b, "tuned")
    va, vb = judge.values_of(res, inst, A, metric, direction), judge.values_of(res, inst, B, metric, direction)
    d = judge.paired_differences(va, vb, direction)
    v, e, lo, hi = judge.verdict_of(d)
    ma = sorted(x for x in va.values()); mb = sorted(x for x in vb.values())
    print(f"{key} {a} vs {b} {metric}: {a} median {ma[len(ma)//2]:.4g}, {b} {mb[len(mb)//2]:.4g}; d {e:+.4g} [{lo:.4g}, {hi:.4g}] n={d.size} -> {v}")
