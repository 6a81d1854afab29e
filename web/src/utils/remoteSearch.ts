import { computed, type Ref, ref } from 'vue'

/**
 * Options looked up as they are typed (a remote el-select): an answer that comes back after a
 * later query's is dropped, and a failed lookup shows no options.
 */
export function useRemoteSearch<T>(find: (q: string) => Promise<T[]>, initial: T[] = []) {
  const options = ref(initial) as Ref<T[]>
  const loading = ref(false)
  /** whether any search has come back (before that there is nothing to call "not found") */
  const searched = ref(false)
  let latest = 0
  async function search(q: string) {
    const s = q.trim()
    if (!s) return
    const mine = ++latest
    loading.value = true
    try {
      const found = await find(s)
      if (mine === latest) options.value = found
    } catch {
      if (mine === latest) options.value = []
    } finally {
      if (mine === latest) {
        loading.value = false
        searched.value = true
      }
    }
  }
  /** the el-select's remote wiring, for v-bind */
  const select = computed(() => ({ filterable: true, remote: true, remoteMethod: search, loading: loading.value }))
  return { options, loading, searched, search, select }
}
