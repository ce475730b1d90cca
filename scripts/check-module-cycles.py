#!/usr/bin/env python3
"""Fails when a crate's modules import each other in a cycle (a module should only `use` what
stands below it). Reads `crate::` and `super::` paths outside #[cfg(test)] modules; prints the
cycles found per crate. Run from the repository root (scripts/test.sh does)."""
import os,re,sys
def modname(root,path):
    rel=os.path.relpath(path,root)[:-3]
    parts=rel.split('/')
    if parts[-1] in('mod','lib','main'): parts=parts[:-1]
    return '::'.join(parts)
bad=False
for crate in ['worker','coordinator','core','cli','proto']:
    root=f'{crate}/src'
    mods={}
    for d,_,fs in os.walk(root):
        for f in fs:
            if f.endswith('.rs'):
                p=os.path.join(d,f); mods[modname(root,p)]=open(p).read()
    names=set(mods)
    edges={m:set() for m in mods}
    for m,src in mods.items():
        # strip test modules
        src=re.split(r'#\[cfg\(test\)\]\s*mod \w+', src)[0]
        for u in re.findall(r'crate::([a-z_0-9:]+)', src):
            parts=u.split('::')
            for k in range(len(parts),0,-1):
                cand='::'.join(parts[:k])
                if cand in names:
                    if cand!=m and not m.startswith(cand+'::') and not cand.startswith(m+'::') if m else True: edges[m].add(cand)
                    break
        parent=m.rsplit('::',1)[0] if '::' in m else ''
        for u in re.findall(r'\bsuper::([a-z_0-9]+)', src):
            cand=(parent+'::'+u) if parent else u
            if cand in names and cand!=m: edges[m].add(cand)
    # find 2-cycles and longer via DFS on top-level sibling granularity
    found=set()
    def dfs(start,node,path,seen):
        for n in edges.get(node,()):
            if n==start and len(path)>1: found.add(tuple(sorted(path)))
            elif n not in seen and len(path)<6:
                dfs(start,n,path+[n],seen|{n})
    for m in mods: dfs(m,m,[m],{m})
    print(crate, 'module cycles:', sorted(found)[:10] if found else 'none')
    bad = bad or bool(found)
sys.exit(1 if bad else 0)
