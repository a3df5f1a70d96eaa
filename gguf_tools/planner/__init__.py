"""Budgeted mixed-precision planning: the best file that fits a size, from measured sensitivity.

    sens = measure.measure("model-f16.gguf", text)             # per tensor x type: predicted dKLD (cached)
    plan = budget.plan_budget(reader, sens, target, header)    # the least-damage types under the budget
    budget.best_rival(reader, target, header, has_imatrix=...) # the llama.cpp preset the plan must beat

``gguf_tools.budgeted`` runs the whole job (measure, plan, write, verify) for ``convert`` and ``quantize``. Modules:
sizes (size options), candidates (types and byte costs), sensitivity (weighted error, KLD probes), executor (process
pool or Ray), cache, allocate (convex hull, Lagrangian bisection, greedy fill), budget, report, plot. The keys a
planned file records are in gguf_file/plan_record.py (``inspect`` reads them).
"""
