import { type Ref, ref, shallowRef } from 'vue'

/** One request's state for a page: data, loading, error, reload. Stale answers are dropped. */
export function useLoader<T>(load: () => Promise<T>, immediate = true) {
  const data = shallowRef<T | null>(null) as Ref<T | null>
  const loading = ref(false)
  const error = shallowRef<unknown>(null)
  let generation = 0
  async function reload(): Promise<void> {
    const mine = ++generation
    loading.value = true
    error.value = null
    try {
      const value = await load()
      if (mine === generation) data.value = value
    } catch (e) {
      if (mine === generation) error.value = e
    } finally {
      if (mine === generation) loading.value = false
    }
  }
  if (immediate) void reload()
  return { data, loading, error, reload }
}
